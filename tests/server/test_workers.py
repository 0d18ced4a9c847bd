"""``tokenrelay serve --workers N``: real processes on a redis-server of the test's own.

Which worker a request reaches is the kernel's choice (SO_REUSEPORT spreads connections over the workers): a test
learns it from ``/api/health``'s ``instance`` on a client with a single keep-alive connection, whose later
requests go to the same worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.processes import Payload, ServeProcess, text
from tests.own_redis import RedisProcess
from tokenrelay.cli import main
from tokenrelay.sse import ServerSentEvent, SSEDecoder

USER = "u"
# A long answer (1,500 deltas of "x ", one every 20 ms: 30 s), still going while a test acts on it.
FLAGS = (
    "--backend",
    "synthetic",
    "--synthetic-tokens",
    "1500",
    "--synthetic-interval-ms",
    "20",
    "--synthetic-token",
    "x ",
)


def workers_of(parent: int) -> set[int]:
    """The parent's child processes (Linux: /proc/<pid>/task/<pid>/children)."""
    path = Path(f"/proc/{parent}/task/{parent}/children")
    if not path.exists():
        pytest.skip("needs /proc/<pid>/task/<pid>/children")
    return {int(pid) for pid in path.read_text().split()}


async def client_on(url: str, instance: str | None = None) -> tuple[str, httpx.AsyncClient]:
    """A client with one keep-alive connection, to worker ``instance`` (any if None), and that worker's id."""
    for _ in range(100):
        client = httpx.AsyncClient(base_url=url, timeout=20, limits=httpx.Limits(max_connections=1))
        got = (await client.get("/api/health")).json()["instance"]
        if instance is None or got == instance:
            return str(got), client
        await client.aclose()
    raise AssertionError(f"no connection reached worker {instance} in 100 tries")


async def instances(url: str, connections: int) -> set[str]:
    found: set[str] = set()
    for _ in range(connections):
        got, client = await client_on(url)
        await client.aclose()
        found.add(got)
    return found


@contextlib.asynccontextmanager
async def workers(tmp_path: Path, redis: RedisProcess, *flags: str) -> AsyncIterator[ServeProcess]:
    env = {"TOKENRELAY_STORE": "redis", "TOKENRELAY_REDIS_URL": redis.url, "TOKENRELAY_LIVENESS_S": "1.5"}
    proc = ServeProcess(tmp_path / "workers.log", "--workers", "2", *FLAGS, *flags, env=env)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            await proc.ready(client, timeout=90)
        yield proc
    finally:
        proc.stop()
        for pid in workers_of(proc.process.pid) if proc.process.poll() is None else set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Stream:
    """One stream's frames (each with its event id under ``"id"``) as they come, and its run id."""

    def __init__(self) -> None:
        self.frames: list[Payload] = []
        self.run_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._grew = asyncio.Event()

    async def follow(self, client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> None:
        decoder = SSEDecoder()
        async with client.stream(method, path, **kw) as r:
            assert r.status_code == 200, await r.aread()
            self.run_id.set_result(r.headers.get("x-run-id", ""))
            async for chunk in r.aiter_raw():
                for frame in decoder.feed(chunk):
                    if isinstance(frame, ServerSentEvent):
                        self.frames.append({**json.loads(frame.data), "id": frame.id})
                        self._grew.set()

    async def deltas(self, n: int) -> None:
        """Until ``n`` text deltas have come."""
        async with asyncio.timeout(15):
            while sum("delta" in f for f in self.frames) < n:
                self._grew.clear()
                await self._grew.wait()


def test_more_than_one_worker_refuses_the_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--workers", "2", "--backend", "synthetic"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("tokenrelay: error: --workers 2 needs a shared run store (--store redis)")


def test_more_than_one_worker_refuses_a_memory_history(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--workers", "3", "--backend", "synthetic", "--store", "redis", "--history", "memory"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--workers 3 needs a shared history (--history sql)" in err


async def test_connections_reach_both_workers_and_any_worker_resumes_and_cancels_a_run(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    async with workers(tmp_path, own_redis) as proc:
        seen = await instances(proc.url, 40)
        assert len(seen) == 2, seen
        owner, on_owner = await client_on(proc.url)
        (other,) = seen - {owner}
        body = {"message": "hi", "user_id": USER, "conversation_id": "c1"}
        params = {"user_id": USER}
        first, rest = Stream(), Stream()
        async with contextlib.aclosing(on_owner):
            reading = asyncio.create_task(first.follow(on_owner, "POST", "/api/chat/stream", json=body))
            run_id = await asyncio.wait_for(first.run_id, 15)
            await first.deltas(5)
            _, resumer = await client_on(proc.url, other)
            async with contextlib.aclosing(resumer):
                path, after = f"/api/runs/{run_id}/stream", {"last-event-id": "3"}
                resuming = asyncio.create_task(rest.follow(resumer, "GET", path, params=params, headers=after))
                await rest.deltas(3)
                _, canceller = await client_on(proc.url, other)
                async with contextlib.aclosing(canceller):
                    # The worker that answers does not run it: the run is not among its active ones.
                    assert (await canceller.get("/api/health")).json()["active_runs"] == 0
                    r = await canceller.post(f"/api/runs/{run_id}/cancel", params=params)
                    assert r.status_code == 200, r.text
                    assert r.json() == {"run_id": run_id, "cancelled": True}
                await asyncio.wait_for(asyncio.gather(reading, resuming), 15)
    frames, resumed = first.frames, rest.frames
    assert frames[-1]["finish_reason"] == "cancelled", frames[-3:]
    assert resumed[-1]["finish_reason"] == "cancelled", resumed[-3:]
    # Each delta is "x ", its id its place: the other worker sent exactly the deltas after 3, once each.
    assert text(frames) == "x " * last_delta(frames)
    assert text(resumed) == "x " * (last_delta(resumed) - 3)
    assert last_delta(resumed) >= 6


def last_delta(frames: list[Payload]) -> int:
    return max(int(str(f["id"])) for f in frames if "delta" in f)


async def test_sigterm_on_the_parent_ends_every_worker_cleanly_within_the_grace(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    async with workers(tmp_path, own_redis, "--shutdown-grace-s", "0.5") as proc:
        children = workers_of(proc.process.pid)
        assert len(children) == 2
        streams, clients, seen = [], [], set()
        while len(seen) < 2:  # one stream on each worker
            got, client = await client_on(proc.url)
            if got in seen:
                await client.aclose()
                continue
            seen.add(got)
            stream = Stream()
            body = {"message": "hi", "user_id": USER}
            streams.append((stream, asyncio.create_task(stream.follow(client, "POST", "/api/chat/stream", json=body))))
            clients.append(client)
        for stream, _ in streams:
            await stream.deltas(3)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(task for _, task in streams)), 15)
        code = await proc.wait(15)
        took = time.monotonic() - started
        for client in clients:
            await client.aclose()
    assert code == 0, proc.stderr()
    assert took < 0.5 + 5 + 3, took
    for stream, _ in streams:
        error, done = stream.frames[-2], stream.frames[-1]
        assert "error" in error, (took, len(stream.frames), stream.frames[-2:], proc.stderr()[-3000:])
        assert error["error"]["code"] == "shutdown"  # type: ignore[index]
        assert done["finish_reason"] == "error"
    for pid in children:  # reaped by the parent: gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in proc.stderr()


async def test_a_worker_that_dies_is_started_again_and_the_parent_gives_up_when_restarts_keep_failing(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    async with workers(tmp_path, own_redis, "--shutdown-grace-s", "0.5") as proc:
        before = workers_of(proc.process.pid)
        ids_before = await instances(proc.url, 30)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(30):
            while True:  # the replacement serves: a third instance id answers
                now = workers_of(proc.process.pid)
                if len(now) == 2 and victim not in now and len(await instances(proc.url, 10) - ids_before) == 1:
                    break
                await asyncio.sleep(0.1)
        assert f"(pid {victim}) was killed by SIGKILL; starting it again" in proc.stderr()
        # With Redis gone, a worker that dies cannot start again: three tries, then the parent stops everything.
        own_redis.kill()
        os.kill(min(now), signal.SIGKILL)
        code = await proc.wait(60)
    assert code == 1, proc.stderr()
    assert "3 starts in a row: giving up" in proc.stderr()
    # Why: Redis (each failed start says so; which of the two workers' starts the output shows first can vary).
    assert "cannot reach Redis" in proc.stderr()


async def test_a_worker_that_cannot_start_stops_the_parent_with_its_reason(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    env = {"TOKENRELAY_STORE": "redis", "TOKENRELAY_REDIS_URL": own_redis.url}
    missing = tmp_path / "missing.gguf"
    flags = ("--workers", "2", "--backend", "local", "--model-path", str(missing))
    proc = ServeProcess(tmp_path / "workers.log", *flags, env=env)
    try:
        code = await proc.wait(60)
    finally:
        proc.stop()
    assert code == 1
    err = proc.stderr()
    assert err.count(str(missing)) == 1, err
    assert "worker 0" in err
    assert "before it was ready: not starting" in err
