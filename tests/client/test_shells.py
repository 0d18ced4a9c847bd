"""The two shells, AsyncClient and Client, over httpx's MockTransport: the same methods, the same behaviour."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tests.client.frames import deltas, done
from tokenrelay.client import (
    AsyncClient,
    ChatResult,
    Client,
    Delta,
    Done,
    IncompleteStreamError,
    Resume,
    StreamEvent,
    TokenrelayConnectionError,
    TokenrelayHTTPError,
)

BASE = "http://relay.test"
T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]
AnyClient = AsyncClient | Client


class CutStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that is cut (a connection reset) after its bytes."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection reset")


def streamed(body: bytes, **headers: str) -> httpx.Response:
    """A 200 whose body arrives as a stream, as from the network (``content=`` would be read at once)."""
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


@pytest.fixture(params=["async", "sync"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[Handler], AnyClient]]:
    made: list[AnyClient] = []

    def build(handler: Handler) -> AnyClient:
        transport = httpx.MockTransport(handler)
        resume = Resume(backoff_s=0)  # no wait between attempts: the core's delays are tested apart
        client: AnyClient
        if request.param == "async":
            client = AsyncClient(http=httpx.AsyncClient(transport=transport, base_url=BASE), resume=resume)
        else:
            client = Client(http=httpx.Client(transport=transport, base_url=BASE), resume=resume)
        made.append(client)
        return client

    yield build
    for client in made:
        if isinstance(client, AsyncClient):
            await client.aclose()
        else:
            client.close()


async def drain(stream: AsyncIterator[StreamEvent] | Iterator[StreamEvent]) -> list[StreamEvent]:
    if isinstance(stream, AsyncIterator):
        return [event async for event in stream]
    return list(stream)


async def settle(value: T | Awaitable[T]) -> T:
    return await value if inspect.isawaitable(value) else value


def test_both_shells_have_the_same_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        lifecycle = {"aclose", "close"}
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in lifecycle
        }

    assert public(AsyncClient) == public(Client)
    assert set(public(Client)) == {"stream_chat", "stream_run", "chat", "cancel", "approve", "health"}


async def test_a_cut_stream_is_resumed_from_its_last_event_id(make: Callable[[Handler], AnyClient]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, headers={"x-run-id": "r1"}, stream=CutStream(deltas(1, "a", "b")[:-3]))
        return streamed(deltas(2, "b", "c") + done(4, run_id="r1"))

    events = await drain(make(handler).stream_chat("hi", user_id="ann"))
    assert events == [Delta("a", "1"), Delta("b", "2"), Delta("c", "3"), Done("stop", "r1", None, None, "4")]
    resume = seen[1]
    assert resume.url.path == "/api/runs/r1/stream"
    assert resume.headers["last-event-id"] == "1"  # frame 2 was cut in half: sent again, delivered once
    assert resume.url.params["user_id"] == "ann"


async def test_stream_run_follows_a_run_by_id(make: Callable[[Handler], AnyClient]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/api/runs/r7/stream")
        if request.headers["last-event-id"] == "9":
            return httpx.Response(204)
        assert request.headers["last-event-id"] == "2"
        return streamed(deltas(3, "c") + done(4))

    client = make(handler)
    assert await drain(client.stream_run("r7", after=2)) == [Delta("c", "3"), Done("stop", None, None, None, "4")]
    assert await drain(client.stream_run("r7", after=9)) == []  # finished, nothing after event 9


async def test_a_stream_that_cannot_be_completed_raises_with_what_it_had(make: Callable[[Handler], AnyClient]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, headers={"x-run-id": "r1"}, stream=CutStream(deltas(1, "a")))
        return httpx.Response(404)  # expired

    with pytest.raises(IncompleteStreamError) as info:
        await drain(make(handler).stream_chat("hi"))
    assert (info.value.last_event_id, info.value.text) == ("1", "a")


async def test_chat_collects_the_answer(make: Callable[[Handler], AnyClient]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.read() == b'{"message":"hi","conversation_id":"c1"}'
        return streamed(deltas(1, "a", "b") + done(3, run_id="r1", conversation_id="c1"))

    result = await settle(make(handler).chat("hi", conversation_id="c1"))
    assert result == ChatResult("ab", "stop", "r1", "c1")


async def test_cancel_and_health(make: Callable[[Handler], AnyClient]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/health":
            return httpx.Response(200, json={"status": "ok"})
        assert (request.method, request.url.path, request.url.params["user_id"]) == (
            "POST",
            "/api/runs/r1/cancel",
            "ann",
        )
        return httpx.Response(200, json={"cancelled": True})

    client = make(handler)
    assert await settle(client.cancel("r1", user_id="ann")) is True
    assert await settle(client.health()) == {"status": "ok"}


async def test_a_refused_request_is_the_servers_error(make: Callable[[Handler], AnyClient]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "run_not_found", "message": "no such run"}})

    client = make(handler)
    with pytest.raises(TokenrelayHTTPError, match="run_not_found"):
        await drain(client.stream_run("r1"))
    with pytest.raises(TokenrelayHTTPError, match="run_not_found"):
        await settle(client.cancel("r1"))


async def test_every_request_to_an_unreachable_server_is_a_connection_error(
    make: Callable[[Handler], AnyClient],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = make(handler)
    calls: list[Callable[[], Any]] = [
        lambda: drain(client.stream_chat("hi")),
        lambda: drain(client.stream_run("r1")),
        lambda: settle(client.cancel("r1")),
        lambda: settle(client.health()),
    ]
    for call in calls:
        with pytest.raises(TokenrelayConnectionError, match="cannot reach"):
            await call()
