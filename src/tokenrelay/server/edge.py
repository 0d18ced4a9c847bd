"""The connection edge of ``tokenrelay serve``: uvicorn's httptools protocol with bounded request heads.

uvicorn bounds neither the size nor the count of a request's headers on httptools, and a connection that never
finishes its request head is never closed (its keep-alive timeout only runs between two requests). This protocol:

- refuses a request head (request line and headers) over ``max_head_bytes`` or with more than ``max_headers``
  headers with a 431, without buffering more than the limit and one read;
- closes a connection that has not sent a whole request head ``head_timeout_s`` after it opened (or after its
  previous response), with a 408 if it had started one — a client trickling bytes does not reset the clock;
- answers past ``max_connections`` open connections (or requests in flight) with a JSON 503 and ``Retry-After``
  instead of uvicorn's plain-text one;
- answers an HTTP/1.0 request whose response has no length by closing the connection at its end, not with a chunked
  body (HTTP/1.0 has no chunked encoding);
- cancels a streaming response's task when its connection is lost (the scope's
  :data:`~tokenrelay.server.sse_response.DISCONNECT_WATCH`), so that the response needs no second task listening
  for ``http.disconnect``.

Everything after the request head (the body's size, its reading time, authentication) is the application's: see
:func:`~tokenrelay.server.pipeline.read_json_object`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from tokenrelay._latch import Latch
from tokenrelay.server.sse_response import DISCONNECT_WATCH

__all__ = ["ConnectionLimits", "LimitedHttpProtocol", "http_protocol"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may cost before the application sees its request."""

    max_head_bytes: int = 128 * 1024
    max_headers: int = 100
    head_timeout_s: float = 20.0
    max_connections: int | None = None
    retry_after_s: int = 1


_LINGER_S = 1.0


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a request head that is over a limit."""


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_FIRED = object()  # the watched task was cancelled: its client disconnected


class _Pipeline(list):  # type: ignore[type-arg]
    """uvicorn's queue of pipelined requests (``appendleft``, ``pop``), as a list: a deque allocates ~700 B at once,
    for a queue that is empty on all but a pipelining client's connections."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits of :attr:`limits` (bind them with :func:`http_protocol`)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # uvicorn's protocol keeps about thirty attributes in its instance dict, the most a dict shares its keys with
    # the other instances' for; six more would give every connection a dict of its own (~1.5 KB): these are slots.
    __slots__ = ("_head_bytes", "_head_count", "_head_timer", "_in_head", "_lingering", "_refusal", "_watched")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own check answers in plain text; on_headers_complete answers it in JSON instead.
        self.limit_concurrency = None
        self._in_head = True
        self._head_bytes = 0
        self._head_count = 0
        self._head_timer: TimerHandle | None = None
        self._refusal: tuple[int, bytes] | None = None
        self._lingering = False
        self._watched: asyncio.Task[object] | object | None = None  # the task to cancel when the client leaves
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        # Armed as the protocol is made, which is when its connection is (the loop calls connection_made next).
        self._arm_head_timer()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        flow: FlowControl = self.flow
        if isinstance(getattr(flow, "_is_writable_event", None), asyncio.Event):
            flow._is_writable_event = _latch(flow._is_writable_event)  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)
        watched = self._watched
        if isinstance(watched, asyncio.Task):
            self._watched = _FIRED
            watched.cancel()

    # The DisconnectWatch of this connection's requests (one response at a time is written on a connection).

    def cancel_on_disconnect(self, task: asyncio.Task[object]) -> bool:
        cycle = self.cycle
        if cycle is None or cycle.disconnected or cycle.more_body or self.transport.is_closing():
            return False
        self._watched = task
        return True

    def release(self, task: asyncio.Task[object]) -> bool:
        watched, self._watched = self._watched, None
        return watched is _FIRED

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # what a refused client still sends, read and dropped until the connection closes
        was_in_head = self._in_head
        super().data_received(data)
        if was_in_head and self._in_head and not self.transport.is_closing():
            # Counted per read, not per header: a single endless header never reaches on_header.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431, "request_head_too_large", f"request head: over {self.limits.max_head_bytes} bytes")
                self._write_refusal()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:
            self._in_head, self._head_bytes, self._head_count = True, 0, 0
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        limit = self.limits.max_connections
        over = limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit)
        app = self.app
        if over:
            self.logger.warning("Over the limit of %d connections: answered 503.", limit)
            self.app = self._overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            self.scope[DISCONNECT_WATCH] = self  # type: ignore[literal-required]
            # The cycle was just made; its task has not run yet, so nobody waits on its event.
            if isinstance(cycle.message_event, asyncio.Event):
                cycle.message_event = _latch(cycle.message_event)  # type: ignore[assignment]
            if self.scope.get("http_version") == "1.0":
                cycle.__class__ = _Http10Cycle

    def send_400_response(self, msg: str) -> None:
        # The parser reports a refusal raised from a callback as a malformed request: answer the refusal instead.
        if self._refusal is not None:
            self._write_refusal()
        else:
            super().send_400_response(msg)

    def _count(self, size: int, headers: int) -> None:
        self._head_bytes += size
        self._head_count += headers
        if self._head_count > self.limits.max_headers:
            why = f"more than {self.limits.max_headers} headers"
        elif self._head_bytes > self.limits.max_head_bytes:
            why = f"over {self.limits.max_head_bytes} bytes"
        else:
            return
        self._refuse(431, "request_head_too_large", f"request head: {why}")
        raise _HeadRefused(why)  # stops the parser, which reports it through send_400_response

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refusal = (status, _error_body(code, message))
        self._in_head = False
        self._disarm_head_timer()

    def _write_refusal(self) -> None:
        if self._refusal is None or self.transport.is_closing():
            return
        status, body = self._refusal
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        # A lingering close: closing at once with the client's bytes still unread would reset the connection,
        # and a reset can destroy the answer before the client reads it. Read and drop for a moment, then close.
        self._lingering = True
        self.loop.call_later(_LINGER_S, self.transport.close)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        self._in_head = False
        if self._head_bytes == 0:
            self.transport.close()  # a connection that never said anything: nothing to answer
            return
        self._refuse(408, "request_timeout", f"request head: not received within {self.limits.head_timeout_s:g} s")
        self._write_refusal()

    async def _overloaded(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        body = _error_body("overloaded", "this instance is at its connection limit; try again shortly")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.limits.retry_after_s).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _latch(event: asyncio.Event) -> Latch:
    latch = Latch()
    if event.is_set():
        latch.set()
    return latch


class _Http10Cycle(RequestResponseCycle):
    """HTTP/1.0 knows no chunked encoding: a response of unknown length ends when the connection closes.

    uvicorn (httptools) would chunk it, which an HTTP/1.0 client reads as garbage. Its keep-alive is already off
    for HTTP/1.0, so the connection does close when the response completes.
    """

    _close_delimited = False

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            names = {name.lower() for name, _ in message.get("headers", [])}
            if not names & {b"content-length", b"transfer-encoding"}:
                self._close_delimited = True
                self.chunked_encoding = False
                self.expected_content_length = sys.maxsize
        elif message["type"] == "http.response.body" and self._close_delimited and not message.get("more_body"):
            # The last write: what uvicorn takes for the declared length is exactly what is left.
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)


def http_protocol(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """A :class:`LimitedHttpProtocol` bound to ``limits``, for uvicorn's ``Config(http=...)``."""

    class BoundHttpProtocol(LimitedHttpProtocol):
        pass

    BoundHttpProtocol.limits = limits
    return BoundHttpProtocol
