"""A lean HTTP/1.1 transport for the vendors' SDKs: asyncio protocols and httptools instead of httpcore and h11.

The OpenAI and Anthropic SDKs send every request through ``httpx2``, whose default transport parses each chunk of a
streamed body with h11, in Python: at a few hundred concurrent streams that parsing is most of a core. This
transport plugs into the same ``httpx2.AsyncClient`` (``transport=``), so the SDK still builds, authenticates,
retries and maps the request and its errors, while the bytes are read by an ``asyncio.Protocol`` and parsed by
httptools (llhttp, in C — what uvicorn already uses to read requests).

What it does: HTTP/1.1 over TCP or TLS, keep-alive connections pooled per origin (idle ones expire, and a connection
the server closed is never reused), ``Content-Length`` and chunked bodies both ways, the request's ``connect`` /
``read`` / ``write`` / ``pool`` timeouts, back-pressure on a body nobody reads, and httpx2's own exceptions
(``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError`` …) so the SDKs' retry and error mapping cannot tell it
from the default transport. What it leaves to httpx2's default transport: proxies (``lean_client`` falls back when
the environment names one) and HTTP/2.

:class:`Body` is the response stream; :func:`raw_body` lets the fast path read it without httpx2's per-chunk
iterator layers when the body is not content-encoded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx2

from tokenrelay.backends._http_conn import Connection, Origin

__all__ = ["Body", "LeanTransport", "lean_client", "raw_body", "raw_chunks"]

# The response's extension that holds its Body (httpx2 wraps the stream itself in its own).
BODY = "tokenrelay.body"

_DEFAULT_PORTS = {b"http": 80, b"https": 443}


class Body(httpx2.AsyncByteStream):
    """A response body as ``httpx2`` reads it (an async byte stream); the connection goes back to the pool once the
    body has been read to its end, and is closed when the body is abandoned."""

    __slots__ = ("_closed", "_conn", "_read_timeout", "_release")

    def __init__(self, conn: Connection, read_timeout: float | None, release: Callable[[Connection], None]) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._release = release
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        conn, timeout = self._conn, self._read_timeout
        try:
            while True:
                data = conn.take()
                if data:
                    yield data
                elif conn.complete:
                    return
                else:
                    await conn.readable_future(timeout)
        finally:
            await self.aclose()

    @property
    def connection(self) -> Connection:
        """The connection the body is read from (:meth:`Connection.take` / :meth:`Connection.readable_future`)."""
        return self._conn

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release(self._conn)


def raw_body(response: httpx2.Response) -> Body | None:
    """The lean transport's body of ``response``, to be read as it comes, or ``None`` when the response came from
    another transport or its body needs decoding (``Content-Encoding``): then read it with
    ``response.aiter_bytes()``."""
    stream = response.extensions.get(BODY)
    if not isinstance(stream, Body):
        return None
    encoding = response.headers.get("content-encoding")
    if encoding and encoding.lower() != "identity":
        return None
    return stream


def raw_chunks(response: httpx2.Response) -> AsyncGenerator[bytes, None] | None:
    """The body's chunks straight from the lean transport (see :func:`raw_body`), or ``None``."""
    body = raw_body(response)
    return None if body is None else body.chunks()


class LeanTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2.AsyncBaseTransport`` on asyncio protocols (see the module's docstring).

    ``max_connections`` bounds the open connections (``None``: no bound; a stream holds its connection as long as
    it lasts), ``max_keepalive`` the idle ones kept per origin, ``keepalive_expiry`` how long one stays idle.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int | None = None,
        max_keepalive: int = 100,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[Origin, collections.deque[tuple[float, Connection]]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx2.UnsupportedProtocol(f"the lean transport speaks http and https, not {url.scheme!r}")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        conn = await self._connection(origin, timeouts, request)
        try:
            await conn.send(request, timeouts.get("write"))
            status, reason, headers = await conn.response_head(timeouts.get("read"))
        except BaseException:
            self._discard(conn)
            raise
        body = Body(conn, timeouts.get("read"), self._release)
        return httpx2.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason, BODY: body},
        )

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for _, conn in idle:
                conn.close()
        self._idle.clear()

    # The pool.

    async def _connection(
        self, origin: Origin, timeouts: dict[str, float | None], request: httpx2.Request
    ) -> Connection:
        if self._closed:
            raise httpx2.ConnectError("the transport is closed", request=request)
        reused = self._reuse(origin)
        if reused is not None:
            return reused
        await self._slot(timeouts.get("pool"), request)
        try:
            conn = await Connection.open(origin, self._ssl_context(origin), timeouts.get("connect"), request)
        except BaseException:
            self._free_slot()
            raise
        conn.counted = True
        return conn

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            since, conn = idle.pop()
            if conn.alive and now - since < self.keepalive_expiry:
                return conn
            self._discard(conn)
        return None

    async def _slot(self, timeout: float | None, request: httpx2.Request) -> None:
        """Wait until a connection may be opened (``max_connections``), at most ``timeout`` (``PoolTimeout``)."""
        while self.max_connections is not None and self._open >= self.max_connections:
            if not self._close_an_idle_one():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout(timeout):
                        await waiter
                except TimeoutError:
                    raise httpx2.PoolTimeout("no connection became free in time", request=request) from None
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
        self._open += 1

    def _close_an_idle_one(self) -> bool:
        for idle in self._idle.values():
            if idle:
                _, conn = idle.popleft()
                self._discard(conn)
                return True
        return False

    def _free_slot(self) -> None:
        self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _release(self, conn: Connection) -> None:
        """A body is done with its connection: keep it for the next request when it can be reused."""
        if self._closed or not conn.reusable:
            self._discard(conn)
            return
        idle = self._idle.setdefault(conn.origin, collections.deque())
        if len(idle) >= self.max_keepalive:
            self._discard(conn)
            return
        conn.reset()
        idle.append((time.monotonic(), conn))

    def _discard(self, conn: Connection) -> None:
        if conn.counted:
            conn.counted = False
            self._free_slot()
        conn.close()

    def _ssl_context(self, origin: Origin) -> ssl.SSLContext | None:
        if origin[0] != b"https":
            return None
        if self._ssl is None:
            context = self._verify if isinstance(self._verify, ssl.SSLContext) else None
            self._ssl = context or httpx2.create_ssl_context(verify=self._verify)
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl


def environment_proxies() -> bool:
    """Whether the environment names a proxy (``HTTPS_PROXY``, ``ALL_PROXY`` …), which this transport does not
    speak: the client then keeps httpx2's default transport."""
    from httpx2._utils import get_environment_proxies

    return any(value is not None for value in get_environment_proxies().values())


def lean_client(sdk_client: Callable[..., httpx2.AsyncClient], **options: Any) -> httpx2.AsyncClient:
    """The SDK's own httpx2 client class (``DefaultAsyncHttpxClient``: its timeouts, redirects) built on the lean
    transport, or on its default transport when the environment names a proxy. ``options`` go to the client."""
    if environment_proxies():
        return sdk_client(**options)
    return sdk_client(transport=LeanTransport(), **options)
