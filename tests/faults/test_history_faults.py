"""The history database made unavailable mid-run, end to end on a real uvicorn server: PostgreSQL's connections
cut by a proxy in front of the shared server (which is never touched), and the SQLite file's disk filled up.

Each time: the run still ends, its viewer gets the done frame with ``"saved": false`` (the answer could not be
stored and the viewer is told so, not told it was), new runs get a JSON 503 with Retry-After and leave nothing
half-written, /api/health is non-200 while it lasts and 200 again once the database is back, when a new run is
saved exactly as its viewer saw it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import FIGURES
from tests.faults.processes import Payload, read_payloads, text
from tests.faults.test_redis_faults import ANSWER, paced, wait_for_async_check
from tests.proxy import CuttingProxy
from tests.server.helpers import serving
from tokenrelay.history.sql import SQLHistory
from tokenrelay.server import Relay, Settings

USER = "u"


async def run_hit_at(client: httpx.AsyncClient, conversation_id: str, fault: Callable[[], None]) -> list[Payload]:
    """A run read whole, ``fault()`` called at its 10th delta."""
    hit: list[int] = []

    def on_delta(n: int) -> None:
        if n == 10:
            fault()
            hit.append(n)

    body = {"message": "hi", "user_id": USER, "conversation_id": conversation_id}
    async with client.stream("POST", "/api/chat/stream", json=body) as r:
        frames = await read_payloads(r, on_delta)
    assert hit, "the run ended before the fault"
    return frames


async def check_down_then_back(
    relay: Relay, client: httpx.AsyncClient, frames: list[Payload], back: Callable[[], None], fault: str
) -> None:
    """The invariant around a history that went away mid-run and comes back with ``back()``."""
    FIGURES.fault(fault)
    FIGURES.runs_checked += 1
    FIGURES.viewers_checked += 1
    assert text(frames) == ANSWER  # the viewer lost nothing of the answer itself
    done = frames[-1]
    assert (done["done"], done["finish_reason"], done.get("saved")) == (True, "stop", False), frames[-2:]
    FIGURES.unsaved_reported += 1
    assert (relay.runs.active_runs, relay.runs.subscribers) == (0, 0)
    health = await client.get("/api/health")
    assert health.status_code == 503, health.text
    assert health.json()["dependencies"]["history"] != "ok"
    r = await client.post("/api/chat/stream", json={"message": "while down", "user_id": USER, "conversation_id": "d"})
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    assert r.json()["error"]["code"] == "unavailable"
    assert relay.runs.active_runs == 0  # refused before any run started

    back()

    async def healthy() -> bool:
        return (await client.get("/api/health")).status_code == 200

    await wait_for_async_check(healthy, timeout=10, what="/api/health to recover")
    assert await relay.history.load(USER, "d") == []  # the refused question was not half-written
    again = await run_hit_at(client, "c-after", lambda: None)
    assert again[-1]["done"] is True
    assert "saved" not in again[-1]
    messages = (await client.get("/api/conversations/c-after/messages", params={"user_id": USER})).json()["messages"]
    lost = [m["content"] for m in messages] != ["hi", text(again)]
    FIGURES.runs_checked += 1
    FIGURES.viewers_checked += 1
    FIGURES.answers_lost += lost
    assert not lost, messages


@contextlib.asynccontextmanager
async def server(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(relay) as (host, port):
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
            yield client


async def test_postgresql_cut_mid_run(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    target = httpx.URL(url.replace("postgresql+asyncpg", "http"))
    proxy = CuttingProxy(target.host, target.port or 5432)
    async with proxy.serve() as proxy_url:
        port = httpx.URL(proxy_url).port
        proxied = url.replace(f"{target.host}:{target.port}", f"127.0.0.1:{port}")
        assert proxied != url
        history = SQLHistory(proxied, schema=schema)
        relay = Relay(paced(), Settings(backend="synthetic"), history=history)
        async with server(relay) as client:
            frames = await run_hit_at(client, "c-pg", proxy.partition)
            assert proxy.refused > 0  # the save did try, and the database was not there
            await check_down_then_back(relay, client, frames, proxy.heal, "postgresql cut")


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of the test's own (skipped where mounting is not allowed), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until the disk has no byte left."""
    with path.open("wb") as f, pytest.raises(OSError, match="No space left") as full:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    assert full.value.errno == errno.ENOSPC, full.value


async def test_sqlite_disk_full_mid_run(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        settings = Settings(backend="synthetic", database_url=f"sqlite+aiosqlite:///{disk / 'history.db'}")
        relay = Relay(paced(), settings)
        filler = disk / "filler"
        async with server(relay) as client:
            frames = await run_hit_at(client, "c-full", lambda: fill(filler))
            await check_down_then_back(relay, client, frames, filler.unlink, "sqlite disk full")
