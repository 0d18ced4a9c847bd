"""Both clients against a real server (real uvicorn, a real port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import running_server
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.client import (
    AsyncClient,
    Client,
    Delta,
    Done,
    IncompleteStreamError,
    StreamError,
    StreamEvent,
    TokenrelayConnectionError,
    TokenrelayHTTPError,
)
from tokenrelay.events import TextDelta
from tokenrelay.server import Relay, Settings, create_app


@pytest.fixture
async def url() -> AsyncIterator[str]:
    relay = Relay(SyntheticBackend(tokens=4, interval_ms=1), Settings(backend="synthetic"))
    async with running_server(create_app(relay=relay)) as base:
        yield base


async def test_async_stream_and_follow_up(url: str) -> None:
    async with AsyncClient(url) as client:
        events = [e async for e in client.stream_chat("hi", user_id="me")]
        assert {type(e) for e in events[:-1]} == {Delta}  # how many depends on coalescing
        assert "".join(e.text for e in events if isinstance(e, Delta)) == "You said: hi. Tokens "
        done = events[-1]
        assert isinstance(done, Done)
        result = await client.chat("again", user_id="me", conversation_id=done.conversation_id)
    assert result.text == "You said: again. Tokens "
    assert result.finish_reason == "stop"
    assert result.conversation_id == done.conversation_id


async def test_sync_client_in_a_thread(url: str) -> None:
    def run() -> str:
        with Client(url) as client:
            return client.chat("sync").text

    assert await asyncio.to_thread(run) == "You said: sync. Tokens "


async def test_http_errors_are_typed_with_the_servers_reason(url: str) -> None:
    async with AsyncClient(url) as client:
        with pytest.raises(TokenrelayHTTPError) as info:
            await client.chat("   ")
    assert info.value.status_code == 422
    assert info.value.field == "message"


async def test_a_stream_without_its_done_frame_is_an_error() -> None:
    async def cut(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b'id: 1\ndata: {"delta": "par"}\n\n', "more_body": True})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"", "more_body": False})  # type: ignore[operator]

    async with running_server(cut, lifespan="off") as base, AsyncClient(base) as client:
        seen = []
        with pytest.raises(IncompleteStreamError) as info:
            async for event in client.stream_chat("hi"):
                seen.append(event)
    assert seen == [Delta("par", "1")]
    assert info.value.last_event_id == "1"
    assert info.value.text == "par"


async def test_error_frames_are_events_not_exceptions() -> None:
    relay = Relay(SyntheticBackend(tokens=4, interval_ms=0, fail_after=2), Settings(backend="synthetic"))
    async with running_server(create_app(relay=relay)) as base, AsyncClient(base) as client:
        result = await client.chat("hi")
    assert result.text == "You said: "
    assert result.finish_reason == "error"
    assert result.errors == [StreamError("backend_error", "synthetic failure after 2 tokens", False, "3")]


async def test_unreachable_server() -> None:
    async with AsyncClient("http://127.0.0.1:9") as client:
        with pytest.raises(TokenrelayConnectionError):
            await client.chat("hi")


async def test_sync_client_follows_a_run_by_id_and_cancels_it() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    relay = Relay(backend, Settings(backend="synthetic", on_disconnect="detach"))
    async with running_server(create_app(relay=relay)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as raw:
            async with raw.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]

        def follow() -> tuple[StreamEvent, bool, list[StreamEvent]]:
            with Client(base) as client:
                events = client.stream_run(run_id)
                first = next(events)
                return first, client.cancel(run_id), list(events)

        first, cancelled, rest = await asyncio.to_thread(follow)
        await asyncio.wait_for(backend.cancelled.wait(), 5)  # the cancel reached the model
    assert first == Delta("a", "1")
    assert cancelled is True
    assert isinstance(rest[-1], Done)
    assert rest[-1].finish_reason == "cancelled"


def test_sync_client_against_nothing_is_a_connection_error() -> None:
    with Client("http://127.0.0.1:9") as client, pytest.raises(TokenrelayConnectionError):
        client.chat("hi")
