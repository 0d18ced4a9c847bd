"""A local HTTP/1.1 server that replays recorded provider responses, byte for byte, to the real SDKs.

It is a raw asyncio server rather than an ASGI app so that a test can do what a real upstream does and a
framework hides: send a stream one SSE event per chunk, drop the connection in the middle of a chunked body, or
hold the response open and note the moment the client goes away (which is how cancellation is observed "on the
server side"). Every request is recorded with its JSON body, so a test can check what the backend asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FIXTURES = Path(__file__).parent / "fixtures"

# An SSE event ends with a blank line; each one is sent as its own chunk, as a provider flushes them.
_EVENT_END = re.compile(rb"(?:\r\n|\r|\n){2}")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """One response. ``then`` says how it ends: normally, ``"cut"`` (the connection drops mid-body) or
    ``"hold"`` (the body stays open until the client leaves)."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream; charset=utf-8"
    then: Literal["end", "cut", "hold"] = "end"
    sent: asyncio.Event = field(default_factory=asyncio.Event)
    client_left: asyncio.Event = field(default_factory=asyncio.Event)
    client_left_at: float | None = None


class ReplayServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._replies: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, name: str, **kwargs: Any) -> Reply:
        """Queue the fixture ``name`` as the next response; JSON fixtures go out as ``application/json``."""
        if name.endswith(".json"):
            kwargs.setdefault("content_type", "application/json")
        reply = Reply(fixture(name), **kwargs)
        self._replies.append(reply)
        return reply

    async def __aenter__(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Idle keep-alive connections end by EOF, not by cancellation (which asyncio would log as an error).
        for writer in list(self._writers):
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                reply = self._replies.popleft() if self._replies else _nothing_queued()
                if not await _send(reply, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _nothing_queued() -> Reply:
    body = b'{"error": {"message": "replay server: no reply queued", "type": "server_error"}}'
    return Reply(body, status=500, content_type="application/json")


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed an idle keep-alive connection
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", ""), "the SDKs send bodies with a Content-Length"
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


def _head(reply: Reply, framing: str) -> bytes:
    phrase = http.HTTPStatus(reply.status).phrase if reply.status in http.HTTPStatus._value2member_map_ else "Status"
    lines = [f"HTTP/1.1 {reply.status} {phrase}", f"content-type: {reply.content_type}", framing]
    lines += [f"{k}: {v}" for k, v in reply.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Write ``reply``; ``True`` if the connection can serve another request."""
    if not reply.content_type.startswith("text/event-stream"):
        writer.write(_head(reply, f"content-length: {len(reply.body)}") + reply.body)
        await writer.drain()
        reply.sent.set()
        return True
    writer.write(_head(reply, "transfer-encoding: chunked\r\ncache-control: no-cache"))
    for event in _events(reply.body):
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
    reply.sent.set()
    if reply.then == "end":
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
    if reply.then == "hold":
        # Reading returns b"" (or fails) exactly when the client closes its end: that is the moment to record.
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        reply.client_left_at = asyncio.get_running_loop().time()
        reply.client_left.set()
    return False  # "cut": the body never ends; closing the socket now is the cut


def _events(body: bytes) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    for match in _EVENT_END.finditer(body):
        out.append(body[start : match.end()])
        start = match.end()
    if body[start:]:
        out.append(body[start:])
    return out


class TcpProxy:
    """Forwards TCP to ``target_port`` and notes when each client connection closes: the server-side view of a
    real upstream (the llama.cpp server) that keeps no such record itself."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.opened = 0
        self.client_closed: list[float] = []
        self._server: asyncio.Server | None = None
        self._closed = asyncio.Condition()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def wait_closed(self, count: int, timeout: float) -> float:
        """The time the ``count``-th client connection closed, waiting up to ``timeout`` for it."""
        async with asyncio.timeout(timeout), self._closed:
            await self._closed.wait_for(lambda: len(self.client_closed) >= count)
        return self.client_closed[count - 1]

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.opened += 1
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()

        to_server = asyncio.create_task(pump(client_r, upstream_w))
        to_client = asyncio.create_task(pump(upstream_r, client_w))
        await to_server  # ends when the client closes its end
        async with self._closed:
            self.client_closed.append(asyncio.get_running_loop().time())
            self._closed.notify_all()
        to_client.cancel()
        for w in (upstream_w, client_w):
            w.close()
