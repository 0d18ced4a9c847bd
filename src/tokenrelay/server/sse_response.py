"""The streaming response: a small ASGI callable, written by hand on purpose.

It does two things at once and nothing per event beyond ``send``: it writes the frames an async iterator gives it,
and it stops the moment the client leaves. That is Starlette's ``StreamingResponse`` shape without its per-chunk
overhead, and without polling ``is_disconnected()``. An ordinary disconnect is not an error: it ends the response
quietly, and closing the frames (``aclose()``) is what tells the run its subscriber left.

How it hears the client leave depends on the server. Under ``tokenrelay serve`` the connection itself cancels the
response's task when it is lost (the scope's :data:`DISCONNECT_WATCH`, put there by
:mod:`~tokenrelay.server.edge`): one task per stream, the request's own. Under any other ASGI server the writer
runs on a second task while the request's task listens for ``http.disconnect`` and cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Mapping
from typing import Protocol, runtime_checkable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["DISCONNECT_WATCH", "SSE_HEADERS", "DisconnectWatch", "SSEFrames", "SSEResponse"]

SSE_HEADERS: dict[str, str] = {
    "cache-control": "no-cache",
    # nginx (and proxies that honour it) must not buffer the stream.
    "x-accel-buffering": "no",
    # No "connection" header: HTTP/1.1 keeps the connection by default, and the server adds "connection: close"
    # where it must (HTTP/1.0, shutdown) — a fixed "keep-alive" here would then contradict it.
}


_BASE_HEADERS = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SSE_HEADERS.items()]


DISCONNECT_WATCH = "tokenrelay.disconnect_watch"
"""The scope key of a server's :class:`DisconnectWatch` for the request's connection (absent: listen with
``receive()``)."""


@runtime_checkable
class DisconnectWatch(Protocol):
    """What a server offers for a response to hear its client leave without a task waiting on ``receive()``."""

    def cancel_on_disconnect(self, task: asyncio.Task[object]) -> bool:
        """Cancel ``task`` when the client disconnects. False, and nothing is watched, when the watch cannot be
        kept: the client has gone already, or the request's body is still coming (``receive()`` must read it)."""
        ...

    def release(self, task: asyncio.Task[object]) -> bool:
        """Stop watching for ``task``; whether the client's disconnect cancelled it."""
        ...


class SSEFrames(AsyncIterable[bytes], Protocol):
    """What an :class:`SSEResponse` writes: chunks of bytes, and ``aclose()`` to release their source.

    The response closes its frames however it ends, even when it never started iterating them (a client that left
    before the first byte). An async generator of bytes is one; so is :class:`~.event_stream.EventStream`.
    """

    async def aclose(self) -> None: ...


class SSEResponse(Response):
    """A ``text/event-stream`` response that writes ``frames`` as they come and stops when the client leaves."""

    def __init__(
        self,
        frames: SSEFrames,
        *,
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        # Not calling Response.__init__: there is no body to render, only a stream to relay.
        self.frames = frames
        self.status_code = status_code
        self.background = None
        content_type = (b"content-type", f"{media_type}; charset=utf-8".encode("latin-1"))
        extra = {k.lower(): v for k, v in headers.items()} if headers else {}
        if extra.keys().isdisjoint(SSE_HEADERS) and "content-type" not in extra:
            # The usual case: the fixed headers are shared, only the response's own are encoded.
            own = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
            self.raw_headers = [*_BASE_HEADERS, content_type, *own]
        else:
            raw = {**SSE_HEADERS, "content-type": content_type[1].decode("latin-1"), **extra}
            self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        this = asyncio.current_task()
        assert this is not None
        watch = scope.get(DISCONNECT_WATCH)
        if watch is not None and watch.cancel_on_disconnect(this):
            await self._write_watched(watch, this, send)
        else:
            await self._write_listening(this, receive, send)

    async def _write_watched(self, watch: DisconnectWatch, this: asyncio.Task[object], send: Send) -> None:
        # The server cancels this task when the client leaves: the frames are written here, with nothing else
        # waiting. A cancel that is not the client's (shutdown) goes on cancelling.
        try:
            # One turn of the loop first, as a writer task would start: a run whose first event comes at once (the
            # run's task is already scheduled) has it in the store by then, and it goes out in that same turn. Read
            # at once, it would be waited for, and the turn after is where a history's write on its own thread may
            # take the interpreter first (measured: +1.2–1.6 ms to the first token with the SQLite history).
            await asyncio.sleep(0)
            await self._write(send)
        except asyncio.CancelledError:
            if not watch.release(this) or this.uncancel() > 0:
                raise
        except OSError:
            pass  # how the server reports a write to a closed socket: an ordinary disconnect
        finally:
            watch.release(this)  # before the frames are closed: a disconnect now cancels nothing
            await self.frames.aclose()

    async def _write_listening(self, this: asyncio.Task[object], receive: Receive, send: Send) -> None:
        # The writer runs on its own task; this one listens for the client leaving. Whichever ends first ends the
        # other: a disconnect cancels the writer, the writer's end cancels this listener. Two tasks, not three
        # (no asyncio.wait): thousands of streams are held open at once.
        writer = asyncio.create_task(self._write(send))
        listening = True

        def writer_done(_: object) -> None:
            if listening:
                this.cancel()

        writer.add_done_callback(writer_done)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except asyncio.CancelledError:
            # Cancelled by the writer's end: carry on. Cancelled from outside (shutdown): go on cancelling.
            if not writer.done() or this.uncancel() > 0:
                raise
        finally:
            listening = False
            writer.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer  # how it ended is looked at below, once the frames are closed
            # Closing the frames is what tells the run its viewer left. Here, once the writer has stopped, rather than
            # in the writer: a client already gone when the response starts cancels the writer before it ever ran.
            await self.frames.aclose()
        exc = writer.exception() if writer.done() and not writer.cancelled() else None
        if exc is not None and not isinstance(exc, OSError):
            # OSError is how the server reports a write to a closed socket: an ordinary disconnect.
            raise exc

    async def _write(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        self.raw_headers = []  # written once: not held for the stream's length (its own headers are ~500 B)
        await send(start)
        del start
        async for chunk in self.frames:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
