"""``SSEResponse`` at the ASGI level: raw ``receive``/``send`` callables, no HTTP client, every wait guarded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.types import Message, Scope

from tokenrelay.server.sse_response import SSEResponse

GUARD_S = 5  # no test here may hang: each one runs inside this timeout
SCOPE: Scope = {"type": "http", "method": "GET", "path": "/stream", "headers": []}
DISCONNECT: Message = {"type": "http.disconnect"}


class Frames:
    """Frames a test hands out one at a time (``None`` ends them); records ``aclose()``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.pulled = 0

    def feed(self, *items: bytes | BaseException | None) -> Frames:
        for item in items:
            self.queue.put_nowait(item)
        return self

    def __aiter__(self) -> Frames:
        return self

    async def __anext__(self) -> bytes:
        item = await self.queue.get()
        self.pulled += 1
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self.closed.set()


class Client:
    """The ASGI server's side: ``receive`` answers ``http.disconnect`` once ``leave()`` is called."""

    def __init__(self, *, gone: bool = False, on_send: Callable[[Message], Awaitable[None]] | None = None) -> None:
        self.sent: list[Message] = []
        self.left = asyncio.Event()
        if gone:
            self.left.set()
        self._on_send = on_send

    def leave(self) -> None:
        self.left.set()

    async def receive(self) -> Message:
        if not self.left.is_set():
            await self.left.wait()
        return DISCONNECT

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if self._on_send is not None:
            await self._on_send(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def serve(response: SSEResponse, client: Client) -> None:
    async with asyncio.timeout(GUARD_S):
        await response(SCOPE, client.receive, client.send)


async def test_the_frames_go_out_in_order_after_the_headers_and_the_body_ends() -> None:
    frames = Frames().feed(b"id: 1\ndata: a\n\n", b"", b"id: 2\ndata: b\n\n", None)
    client = Client()
    await serve(SSEResponse(frames, headers={"X-Run-Id": "r1"}), client)
    start = client.sent[0]
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    assert dict(start["headers"]) == {
        b"cache-control": b"no-cache",
        b"x-accel-buffering": b"no",
        b"content-type": b"text/event-stream; charset=utf-8",
        b"x-run-id": b"r1",
    }
    # An empty chunk is not written; the last message ends the body.
    assert client.sent[1:] == [
        {"type": "http.response.body", "body": b"id: 1\ndata: a\n\n", "more_body": True},
        {"type": "http.response.body", "body": b"id: 2\ndata: b\n\n", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    assert frames.closed.is_set()


async def test_headers_of_the_response_replace_the_fixed_ones() -> None:
    client = Client()
    response = SSEResponse(Frames().feed(None), media_type="text/plain", headers={"Cache-Control": "no-store"})
    await serve(response, client)
    headers = dict(client.sent[0]["headers"])
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"


async def test_a_client_gone_before_the_first_byte_still_closes_the_frames() -> None:
    frames = Frames()  # would wait forever for a first frame
    client = Client(gone=True)
    await serve(SSEResponse(frames), client)
    assert frames.closed.is_set()  # the subscription is released: the run learns its viewer left
    assert client.bodies == []


async def test_a_disconnect_mid_stream_stops_the_writer_and_closes_the_frames() -> None:
    frames = Frames().feed(b"data: a\n\n")  # then nothing more: the writer waits for the next frame
    client: Client

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            client.leave()

    client = Client(on_send=on_send)
    await serve(SSEResponse(frames), client)
    assert frames.closed.is_set()
    assert client.bodies == [b"data: a\n\n"]  # no end of body: the client is gone


async def test_a_write_to_a_closed_socket_ends_the_response_quietly() -> None:
    async def broken(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the socket is closed")

    frames = Frames().feed(b"data: a\n\n", b"data: b\n\n")
    await serve(SSEResponse(frames), Client(on_send=broken))
    assert frames.closed.is_set()
    assert frames.pulled == 1


async def test_an_error_in_the_frames_is_raised_after_they_are_closed() -> None:
    frames = Frames().feed(b"data: a\n\n", RuntimeError("the encoder broke"))
    with pytest.raises(RuntimeError, match="the encoder broke"):
        await serve(SSEResponse(frames), Client())
    assert frames.closed.is_set()


async def test_a_cancel_from_outside_propagates_and_closes_the_frames() -> None:
    frames = Frames().feed(b"data: a\n\n")
    written = asyncio.Event()

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            written.set()

    client = Client(on_send=on_send)
    task = asyncio.create_task(SSEResponse(frames)(SCOPE, client.receive, client.send))
    async with asyncio.timeout(GUARD_S):
        await written.wait()
        task.cancel()  # the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
    assert frames.closed.is_set()


async def test_an_async_generator_is_frames_too() -> None:
    closed: list[Any] = []

    async def generate() -> Any:
        try:
            yield b"data: a\n\n"
        finally:
            closed.append(True)

    client = Client()
    await serve(SSEResponse(generate()), client)
    assert client.bodies == [b"data: a\n\n", b""]
    assert closed == [True]
