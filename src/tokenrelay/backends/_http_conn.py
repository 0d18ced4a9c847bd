"""One HTTP/1.1 connection of the lean transport (``_http.py``): an ``asyncio.Protocol`` that writes a request and
parses its response with httptools, keeping the body's chunks until the reader takes them."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Final, cast

import httptools
import httpx2

__all__ = ["Connection", "Origin"]

Origin = tuple[bytes, str | bytes, int]
"""(scheme, host, port): the connections of one origin are interchangeable."""

HIGH_WATER: Final = 256 * 1024
"""Body bytes kept unread before the socket stops being read (the server then waits: back-pressure)."""

_FORBIDDEN = (b"\r", b"\n", b"\0")


def _check_header(name: bytes, value: bytes) -> None:
    if any(c in name or c in value for c in _FORBIDDEN) or b":" in name or not name:
        raise httpx2.LocalProtocolError(f"invalid request header {name!r}")


class Connection(asyncio.Protocol):
    """A keep-alive connection to one origin. One request at a time: :meth:`send`, :meth:`response_head`, then the
    body through :meth:`take` / :meth:`readable_future` until :attr:`complete`; :meth:`reset` readies it for the
    next."""

    # Slots: one of these lives as long as each upstream stream, and a __dict__ would be most of its size.
    __slots__ = (
        "_buffered",
        "_can_write",
        "_chunks",
        "_deadline",
        "_eof_body",
        "_head",
        "_headers",
        "_parser",
        "_paused",
        "_status",
        "_timer",
        "_waiter",
        "complete",
        "counted",
        "error",
        "headers_done",
        "keep_alive",
        "lost",
        "origin",
        "request",
        "transport",
    )

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.counted = False  # holds one of the pool's connection slots
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.error: Exception | None = None
        self.request: httpx2.Request | None = None  # the one being answered, named in errors
        self._waiter: asyncio.Future[None] | None = None
        # The read timeout: one timer per connection, moved lazily (a timer per read would cost about what the
        # read does): it fires at the deadline it was armed for and, if a later read moved the deadline, re-arms.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._can_write: asyncio.Future[None] | None = None
        self._paused = False
        self.reset()

    @classmethod
    async def open(
        cls, origin: Origin, context: ssl.SSLContext | None, timeout: float | None, request: httpx2.Request
    ) -> Connection:
        _, host, port = origin
        hostname = host.decode("ascii") if isinstance(host, bytes) else host
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: cls(origin), hostname, port, ssl=context, server_hostname=hostname if context else None
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {hostname}:{port} timed out", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return conn

    def reset(self) -> None:
        """Ready for the next request's response."""
        self._waiter = None
        self._stop_timer()
        self._parser = httptools.HttpResponseParser(self)
        self._status = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._eof_body = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0

    @property
    def reusable(self) -> bool:
        """Whether the response was read to its end and the connection may carry another request."""
        return self.complete and self.keep_alive and self.alive

    @property
    def alive(self) -> bool:
        return not self.lost and self.error is None

    def close(self) -> None:
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.lost = True

    # Writing the request.

    async def send(self, request: httpx2.Request, timeout: float | None) -> None:
        transport = self.transport
        assert transport is not None
        self.request = request
        url = request.url
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
        chunked = False
        for name, value in request.headers.raw:
            _check_header(name, value)
            head.append(b"%s: %s\r\n" % (name, value))
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
        head.append(b"\r\n")
        try:
            async with asyncio.timeout(timeout):
                transport.write(b"".join(head))
                async for part in request.stream:  # type: ignore[union-attr]
                    if part:
                        transport.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                        await self._drain()
                if chunked:
                    transport.write(b"0\r\n\r\n")
                await self._drain()
        except TimeoutError:
            raise httpx2.WriteTimeout("sending the request timed out", request=request) from None
        if self.lost:
            raise self._failure(httpx2.WriteError, "the connection closed while the request was sent")

    async def _drain(self) -> None:
        if self._can_write is not None:
            await self._can_write

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # Reading the response.

    async def response_head(self, timeout: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if not self.headers_done:
            self._head = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._head
            except TimeoutError:
                raise httpx2.ReadTimeout("the server sent no response in time", request=self.request) from None
        if self.error is not None:
            raise self.error
        if not self.headers_done:
            raise self._failure(httpx2.RemoteProtocolError, "the server closed the connection without a response")
        # Handed over, not kept: the response's headers hold their own copy for as long as the stream lasts.
        headers, self._headers = self._headers, []
        return self._parser.get_status_code(), self._status, headers

    def take(self) -> bytes:
        """The body bytes received and not yet taken (``b""`` when none); raises what broke the connection."""
        chunks = self._chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            return data
        if self.error is not None and not self.complete:
            raise self.error
        return b""

    def readable_future(self, timeout: float | None) -> asyncio.Future[None]:
        """A future to await for more of the body: done when more of it (or its end, or an error) is there;
        ``ReadTimeout`` after ``timeout`` seconds without."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if timeout is not None:
            self._deadline = deadline = loop.time() + timeout
            timer = self._timer
            if timer is None or deadline < timer.when():  # (a shorter timeout than the last read's)
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._check_deadline)
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiter

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms it again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(httpx2.ReadTimeout("the server stopped sending the body", request=self.request))
        else:
            self._timer = loop.call_at(self._deadline, self._check_deadline)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _failure(self, kind: type[httpx2.TransportError], message: str) -> httpx2.TransportError:
        return kind(message, request=self.request)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(self._failure(httpx2.RemoteProtocolError, "the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(self._failure(httpx2.RemoteProtocolError, f"invalid response from the server: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_timer()
        self.transport = None
        if self._eof_body and self.headers_done and not self.complete and exc is None:
            self.complete = True  # a body delimited by the end of the connection
        elif not self.complete and self.error is None:
            message = "the server closed the connection before the response was complete"
            if exc is not None:
                self.error = self._failure(httpx2.ReadError, f"{message}: {exc}")
            else:
                self.error = self._failure(httpx2.RemoteProtocolError, message)
        self.resume_writing()
        self._settle_head()
        self._wake()

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.close()
        self._settle_head()
        self._wake()

    def _settle_head(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        self._status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self._headers}
        self._eof_body = b"content-length" not in names and b"transfer-encoding" not in names
        self._settle_head()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()
