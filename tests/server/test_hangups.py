"""No leak from any hang-up: every route, every moment (mid-body, before the first byte, mid-stream, with RST),
under the default configuration (SQLite history, the shipped on-disconnect policy), with ``detach`` and with the
Redis store — through real uvicorn on a free port, with raw sockets.

After the hang-ups (and the viewers a test holds open leaving), the instance must be back where it started: no run,
no subscriber, no connection, no file descriptor more than before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import httpx
import pytest

from tests.conftest import REDIS_URL, wait_for_async
from tests.server.helpers import ListHandler, uvicorn_server
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.events import TextDelta
from tokenrelay.server import Relay, Settings
from tokenrelay.server.serve import GracefulServer

MOMENTS = ("mid_body", "before_first_byte", "mid_stream", "rst")
ROUTES = ("seed_post", "seed_get", "resume", "aisdk_post", "aisdk_resume", "openai_stream", "openai_plain")
HELD_CHAT = "chat-held"


def _user_message() -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]


def request_for(route: str, n: int, held_run: str) -> bytes:
    """The raw HTTP/1.1 request of ``route`` (the ``n``-th hang-up); GETs have no body."""
    body: dict[str, Any] | None = None
    match route:
        case "seed_post":
            path, body = "/api/chat/stream", {"message": "hi"}
        case "seed_get":
            path = "/api/chat/stream?message=hi"
        case "resume":
            path = f"/api/runs/{held_run}/stream"
        case "aisdk_post":
            path, body = "/api/chat", {"id": f"chat-{n}", "messages": _user_message()}
        case "aisdk_resume":
            path = f"/api/chat/{HELD_CHAT}/stream"
        case "openai_stream" | "openai_plain":
            messages = [{"role": "user", "content": "hi"}]
            path, body = (
                "/v1/chat/completions",
                {"model": "m", "messages": messages, "stream": route == "openai_stream"},
            )
        case _:
            raise ValueError(route)
    if body is None:
        return f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode()
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def hang_up(port: int, request: bytes, moment: str, rng: random.Random) -> None:
    """Send ``request`` and leave at ``moment``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    try:
        if moment == "mid_body":
            head, _, body = request.partition(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n" + body[: max(1, len(body) // 2)] if body else request[: len(request) // 2])
        else:
            writer.write(request)
        await writer.drain()
        if moment == "mid_stream" or (moment == "rst" and rng.random() < 0.5):
            # Until some of the answer has arrived (a non-streaming answer never comes while the run goes on).
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(rng.randint(1, 400)), 0.3)
        if moment == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextmanager
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    """Error records of uvicorn and tokenrelay while the block runs (uvicorn's loggers do not propagate)."""
    handler = ListHandler(logging.ERROR)
    records = handler.records
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "tokenrelay", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def open_fds() -> tuple[int, int]:
    """(descriptors other than sockets and the history database's, the database's). The database's are its
    connection pool's, which keeps up to its size open once a burst made them: bounded, not back to baseline.
    Sockets are counted by :func:`server_connections`: the store's client pools its connections too."""
    others = database = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if ".db" in target:
                database += 1
            elif not target.startswith("socket:"):
                others += 1
    return others, database


def server_connections(port: int) -> int:
    """TCP connections this host holds on the server's side of ``port``: established, or closed by the client
    but not yet by the server (CLOSE_WAIT, the state of a connection the server forgot)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port, state = int(fields[1].rsplit(":", 1)[1], 16), fields[3]
                count += local_port == port and state in ("01", "08")
    return count


@asynccontextmanager
async def held_viewers(base: str) -> AsyncIterator[tuple[str, list[httpx.Response]]]:
    """A seed run and a useChat run, each with a viewer held open for the whole test: what resumes hang up on."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        async with (
            client.stream("POST", "/api/chat/stream", json={"message": "held"}) as seed,
            client.stream("POST", "/api/chat", json={"id": HELD_CHAT, "messages": _user_message()}) as chat,
        ):
            assert seed.status_code == chat.status_code == 200
            yield seed.headers["x-run-id"], [seed, chat]


async def hang_ups(server: GracefulServer, relay: Relay, count: int, seed: int) -> dict[str, int]:
    """Every route x moment once, then random ones up to ``count``, 16 at a time; the invariant checked after."""
    port = server.servers[0].sockets[0].getsockname()[1]
    rng = random.Random(seed)
    plan = [(r, m) for r in ROUTES for m in MOMENTS]
    plan += [(rng.choice(ROUTES), rng.choice(MOMENTS)) for _ in range(count - len(plan))]
    tried: dict[str, int] = {}
    with logged_errors() as errors:
        async with held_viewers(f"http://127.0.0.1:{port}") as (held_run, _):
            baseline_fds, _ = open_fds()
            for start in range(0, len(plan), 16):
                batch = plan[start : start + 16]
                await asyncio.gather(
                    *(hang_up(port, request_for(r, start + i, held_run), m, rng) for i, (r, m) in enumerate(batch))
                )
                for r, m in batch:
                    tried[f"{r}/{m}"] = tried.get(f"{r}/{m}", 0) + 1
        # The held viewers have left too: everything must drain back to nothing.
        await wait_for_async(
            lambda: relay.runs.active_runs == 0 and relay.runs.subscribers == 0,
            timeout=15,
            what=f"runs ({relay.runs.active_runs}) and subscribers ({relay.runs.subscribers}) to return to 0",
        )
        await wait_for_async(lambda: not server.server_state.tasks, timeout=10, what="every request to end")
        await wait_for_async(lambda: server_connections(port) == 0, timeout=10, what="every connection to close")
        await wait_for_async(lambda: open_fds()[0] <= baseline_fds, timeout=10, what="descriptors back to baseline")
        # SQLAlchemy's pool: at most pool_size + max_overflow connections, each a file and its WAL files.
        assert open_fds()[1] <= 3 * 15
    assert not errors, [r.getMessage() for r in errors]
    assert set(tried) >= {f"{r}/{m}" for r in ROUTES for m in MOMENTS}
    return tried


def forever() -> ScriptedBackend:
    """A run that would go on for a minute: only a hang-up's policy ends it in time."""
    return ScriptedBackend([TextDelta("a"), Pause(60)])


async def test_hang_ups_leak_nothing_with_the_default_configuration() -> None:
    # The shipped defaults (SQLite history in the test's directory, the default on-disconnect policy) with a short
    # detach grace, so that a detached run's end comes within the test.
    relay = Relay(forever(), Settings(backend="synthetic", detach_grace_s=0.2))
    assert relay.settings.history == "sql"
    async with uvicorn_server(relay) as server:
        tried = await hang_ups(server, relay, 400, seed=11)
    assert sum(tried.values()) == 400


async def test_hang_ups_leak_nothing_with_cancel() -> None:
    relay = Relay(forever(), Settings(backend="synthetic", on_disconnect="cancel"))
    async with uvicorn_server(relay) as server:
        await hang_ups(server, relay, 200, seed=12)


async def test_hang_ups_leak_nothing_with_detach() -> None:
    relay = Relay(forever(), Settings(backend="synthetic", on_disconnect="detach", detach_grace_s=0.2))
    async with uvicorn_server(relay) as server:
        await hang_ups(server, relay, 200, seed=13)


@pytest.mark.parametrize("on_disconnect", ["cancel", "detach"])
async def test_hang_ups_leak_nothing_with_the_redis_store(
    redis_prefix: str, on_disconnect: Literal["cancel", "detach"]
) -> None:
    settings = Settings(
        backend="synthetic",
        store="redis",
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        on_disconnect=on_disconnect,
        detach_grace_s=0.2,
    )
    relay = Relay(forever(), settings)
    async with uvicorn_server(relay) as server:
        await hang_ups(server, relay, 200, seed=14)
