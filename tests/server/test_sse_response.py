"""``SSEResponse`` at the ASGI level: raw ``receive``/``send`` callables, no HTTP client, every wait guarded.

Every behaviour is checked both ways a response hears its client leave: listening on ``receive()`` (any ASGI
server) and watched by the server (``DISCONNECT_WATCH`` in the scope, as ``tokenrelay serve``'s edge offers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.types import Message, Scope

from tokenrelay.server.sse_response import DISCONNECT_WATCH, DisconnectWatch, SSEResponse

GUARD_S = 5  # no test here may hang: each one runs inside this timeout
SCOPE: Scope = {"type": "http", "method": "GET", "path": "/stream", "headers": []}
DISCONNECT: Message = {"type": "http.disconnect"}


class Frames:
    """Frames a test hands out one at a time (``None`` ends them); records ``aclose()``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.pulled = 0
        self.waits = 0  # reads that found nothing yet

    def feed(self, *items: bytes | BaseException | None) -> Frames:
        for item in items:
            self.queue.put_nowait(item)
        return self

    def __aiter__(self) -> Frames:
        return self

    async def __anext__(self) -> bytes:
        if self.queue.empty():
            self.waits += 1
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
    """The ASGI server's side: ``receive`` answers ``http.disconnect`` once ``leave()`` is called.

    ``watched``: the server also offers a :class:`DisconnectWatch` in the scope, which ``leave()`` fires (the
    connection lost cancels the watched task) — and then ``receive()`` is never needed.
    """

    def __init__(
        self,
        *,
        gone: bool = False,
        watched: bool = False,
        on_send: Callable[[Message], Awaitable[None]] | None = None,
    ) -> None:
        self.sent: list[Message] = []
        self.left = asyncio.Event()
        if gone:
            self.left.set()
        self._on_send = on_send
        self.receives = 0
        self.receiving = asyncio.Event()  # receive() was called
        self.watching = asyncio.Event()  # cancel_on_disconnect() took a task
        self.watched_task: asyncio.Task[object] | None = None
        self.fired = False
        self.scope: Scope = {**SCOPE, DISCONNECT_WATCH: self} if watched else SCOPE

    def leave(self) -> None:
        self.left.set()
        if self.watched_task is not None:
            task, self.watched_task = self.watched_task, None
            self.fired = True
            task.cancel()

    # DisconnectWatch

    def cancel_on_disconnect(self, task: asyncio.Task[object]) -> bool:
        if self.left.is_set():
            return False
        self.watched_task = task
        self.watching.set()
        return True

    def release(self, task: asyncio.Task[object]) -> bool:
        fired, self.fired, self.watched_task = self.fired, False, None
        return fired

    async def receive(self) -> Message:
        self.receives += 1
        self.receiving.set()
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


@pytest.fixture(params=["listening", "watched"])
def watched(request: pytest.FixtureRequest) -> bool:
    """Both ways of hearing the client leave."""
    return bool(request.param == "watched")


async def serve(response: SSEResponse, client: Client) -> None:
    async with asyncio.timeout(GUARD_S):
        await response(client.scope, client.receive, client.send)


def test_the_watch_of_a_test_client_is_a_disconnect_watch() -> None:
    assert isinstance(Client(watched=True), DisconnectWatch)


async def test_a_watched_response_writes_on_its_own_task_and_never_listens() -> None:
    frames = Frames()
    client = Client(watched=True)
    tasks_before = len(asyncio.all_tasks())
    task = asyncio.create_task(serve(SSEResponse(frames), client))
    async with asyncio.timeout(GUARD_S):
        await client.watching.wait()  # the response registers with the watch as it starts
        assert len(asyncio.all_tasks()) == tasks_before + 1  # the response's own task, no writer beside it
        frames.feed(b"data: a\n\n", None)
        await task
    assert client.receives == 0
    assert client.bodies == [b"data: a\n\n", b""]
    assert client.watched_task is None  # released at the end


async def test_a_first_event_already_on_its_way_goes_out_in_the_turn_the_response_starts(watched: bool) -> None:
    # A run's task is scheduled before its response starts; a backend whose first event comes at once has it stored
    # in the next turn. The response reads its first frame in that turn, after the run's step, not before it: a read
    # that waits costs another turn, where a history's write on its own thread may take the interpreter first.
    frames = Frames()
    asyncio.get_running_loop().call_soon(frames.feed, b"data: a\n\n", None)
    await serve(SSEResponse(frames), Client(watched=watched))
    assert frames.waits == 0


async def test_a_listening_response_writes_on_a_second_task() -> None:
    frames = Frames()
    client = Client()
    tasks_before = len(asyncio.all_tasks())
    task = asyncio.create_task(serve(SSEResponse(frames), client))
    async with asyncio.timeout(GUARD_S):
        await client.receiving.wait()
        assert len(asyncio.all_tasks()) == tasks_before + 2  # the request's task listens, the writer writes
        frames.feed(None)
        await task


async def test_the_frames_go_out_in_order_after_the_headers_and_the_body_ends(watched: bool) -> None:
    frames = Frames().feed(b"id: 1\ndata: a\n\n", b"", b"id: 2\ndata: b\n\n", None)
    client = Client(watched=watched)
    response = SSEResponse(frames, headers={"X-Run-Id": "r1"})
    await serve(response, client)
    assert response.raw_headers == []  # written once, then let go: a stream can last minutes
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


async def test_headers_of_the_response_replace_the_fixed_ones(watched: bool) -> None:
    client = Client(watched=watched)
    response = SSEResponse(Frames().feed(None), media_type="text/plain", headers={"Cache-Control": "no-store"})
    await serve(response, client)
    headers = dict(client.sent[0]["headers"])
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"


async def test_a_client_gone_before_the_first_byte_still_closes_the_frames(watched: bool) -> None:
    frames = Frames()  # would wait forever for a first frame
    client = Client(gone=True, watched=watched)
    await serve(SSEResponse(frames), client)
    assert frames.closed.is_set()  # the subscription is released: the run learns its viewer left
    assert client.bodies == []


async def test_a_disconnect_mid_stream_stops_the_writer_and_closes_the_frames(watched: bool) -> None:
    frames = Frames().feed(b"data: a\n\n")  # then nothing more: the writer waits for the next frame
    client: Client

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            client.leave()

    client = Client(on_send=on_send, watched=watched)
    await serve(SSEResponse(frames), client)
    assert frames.closed.is_set()
    assert client.bodies == [b"data: a\n\n"]  # no end of body: the client is gone


async def test_a_write_to_a_closed_socket_ends_the_response_quietly(watched: bool) -> None:
    async def broken(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the socket is closed")

    frames = Frames().feed(b"data: a\n\n", b"data: b\n\n")
    await serve(SSEResponse(frames), Client(on_send=broken, watched=watched))
    assert frames.closed.is_set()
    assert frames.pulled == 1


async def test_an_error_in_the_frames_is_raised_after_they_are_closed(watched: bool) -> None:
    frames = Frames().feed(b"data: a\n\n", RuntimeError("the encoder broke"))
    with pytest.raises(RuntimeError, match="the encoder broke"):
        await serve(SSEResponse(frames), Client(watched=watched))
    assert frames.closed.is_set()


async def test_a_cancel_from_outside_propagates_and_closes_the_frames(watched: bool) -> None:
    frames = Frames().feed(b"data: a\n\n")
    written = asyncio.Event()

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            written.set()

    client = Client(on_send=on_send, watched=watched)
    task = asyncio.create_task(SSEResponse(frames)(client.scope, client.receive, client.send))
    async with asyncio.timeout(GUARD_S):
        await written.wait()
        task.cancel()  # the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
    assert frames.closed.is_set()


async def test_an_async_generator_is_frames_too(watched: bool) -> None:
    closed: list[Any] = []

    async def generate() -> Any:
        try:
            yield b"data: a\n\n"
        finally:
            closed.append(True)

    client = Client(watched=watched)
    await serve(SSEResponse(generate()), client)
    assert client.bodies == [b"data: a\n\n", b""]
    assert closed == [True]
