"""What the server tests share: reading an SSE response, a backend a test can hold mid-answer, and bad requests to
every stream route with a way to collect what they are answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from tests.conftest import running_server, wait_for_async
from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import GenerateOptions, Message
from tokenrelay.events import Event, FinishEvent, TextDelta
from tokenrelay.server import Relay, create_app
from tokenrelay.server.serve import GracefulServer, build_server
from tokenrelay.sse import Comment, ServerSentEvent, SSEDecoder


def host_app(relay: Relay, router: APIRouter, **include: Any) -> FastAPI:
    """A user's own FastAPI app with the relay's lifespan and ``router`` mounted (``include`` goes to
    ``include_router``: ``prefix``, ``dependencies``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with relay.lifespan():
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(router, **include)
    return app


async def read_stream(response: httpx.Response, *, comments: bool = False) -> list[ServerSentEvent | Comment]:
    decoder = SSEDecoder(comments=comments)
    out: list[ServerSentEvent | Comment] = []
    async for chunk in response.aiter_raw():
        out.extend(decoder.feed(chunk))
    return out


def payloads(events: list[ServerSentEvent | Comment]) -> list[dict[str, object]]:
    return [json.loads(e.data) for e in events if isinstance(e, ServerSentEvent)]


class GatedBackend:
    """Says "one", waits for ``gate``, says "two": lets a test act while a run is mid-answer."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[list[Message]] = []
        self.stats = StreamStats()
        self.cancelled = asyncio.Event()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return self.stats.as_dict()

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        self.calls.append(list(messages))
        try:
            yield TextDelta("one")
            await self.gate.wait()
            yield TextDelta(" two")
            yield FinishEvent("stop")
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise


@asynccontextmanager
async def uvicorn_server(relay: Relay, **config: Any) -> AsyncIterator[GracefulServer]:
    """``relay``'s app served as ``tokenrelay serve`` serves it (limits, graceful shutdown), on a free port in this
    event loop; yields the started server."""
    server = build_server(create_app(relay=relay), relay, relay.settings, port=0, **{"log_level": "warning", **config})
    task = asyncio.create_task(server.serve())
    await wait_for_async(lambda: server.started or task.done(), timeout=15, what="uvicorn to start")
    if task.done():
        task.result()
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def serving(relay: Relay, **config: Any) -> AsyncIterator[tuple[str, int]]:
    """:func:`uvicorn_server`, yielding (host, port)."""
    async with uvicorn_server(relay, **config) as server:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield host, port


async def raw_exchange(port: int, request: bytes, *, timeout: float = 5.0, first: bool = False) -> bytes:
    """Send ``request`` as it is on a new connection and read until the server closes it (or ``timeout``); with
    ``first``, only until the first response (with a Content-Length) is whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        out = bytearray()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    out += chunk
                    if first and _whole(out):
                        break
        return bytes(out)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _whole(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return bool(sep) and len(body) >= int(line.split(b":", 1)[1])
    return False


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response (0 when there is none)."""
    line = response.split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def json_body(response: bytes) -> Any:
    """The JSON body of a raw HTTP response with a Content-Length."""
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


class ListHandler(logging.Handler):
    """A log handler that keeps the records it is given."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


BadRequest = tuple[str, str, dict[str, Any]]

BAD_STREAM_REQUESTS: list[BadRequest] = [
    ("GET", "/api/chat/stream", {"params": {"message": " "}}),
    ("GET", "/api/chat/stream", {"params": {"message": "x", "user_id": "a b"}}),
    ("GET", "/api/chat/stream", {"params": {"message": "x", "protocol": "nope"}}),
    ("GET", "/api/chat/stream", {}),
    ("POST", "/api/chat/stream", {"content": b"{", "headers": {"content-type": "application/json"}}),
    ("POST", "/api/chat/stream", {"json": [1]}),
    ("POST", "/api/chat/stream", {"json": {"message": 3}}),
    ("POST", "/api/chat/stream", {"content": b"x", "headers": {"content-type": "text/plain"}}),
    ("GET", "/api/runs/unknown/stream", {}),
    ("GET", "/api/runs/unknown/stream", {"params": {"last_event_id": "x"}}),
    ("GET", "/api/runs/a%20b/stream", {}),
    ("POST", "/api/chat", {"json": {"id": "c", "messages": []}}),
    ("POST", "/api/chat", {"json": {"messages": "no"}}),
    ("GET", "/api/chat/a%20b/stream", {}),
    ("HEAD", "/api/chat/stream", {"params": {"message": "x"}}),  # a HEAD starts no run
    ("HEAD", "/api/chat/c1/stream", {}),
    ("HEAD", "/api/runs/r1/stream", {}),
    ("PUT", "/api/chat/stream", {"json": {"message": "x"}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "m"}}),  # OpenAI's error shape
    ("POST", "/v1/chat/completions", {"content": b"{", "headers": {"content-type": "application/json"}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "m", "messages": [{"role": "user", "content": 3}]}}),
    ("GET", "/v1/chat/completions", {}),
    ("POST", "/api/ag-ui", {"json": {"threadId": "t"}}),
    ("POST", "/api/ag-ui", {"json": {"threadId": "a b", "runId": "r", "messages": []}}),
]
"""Requests every stream route refuses, none of which may start a run."""


async def answers(app: Any, requests: list[BadRequest]) -> list[tuple[int, Any, str | None]]:
    """``app`` served on a port, and what each of ``requests`` is answered: the status, the body (its JSON, or its
    content type and text) and the ``Allow`` header."""
    out: list[tuple[int, Any, str | None]] = []
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        for method, path, options in requests:
            r = await client.request(method, path, **options)
            is_json = r.headers.get("content-type") == "application/json" and r.content
            body = r.json() if is_json else (r.headers.get("content-type"), r.text)
            out.append((r.status_code, body, r.headers.get("allow")))
    return out
