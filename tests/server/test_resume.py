"""Resume, end to end through real uvicorn: exact event-id resume, the disconnect policy, the client's own resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.conftest import running_server, wait_for_async
from tests.proxy import CuttingProxy
from tests.server.helpers import payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.backends.base import Backend
from tokenrelay.client import AsyncClient, Client, Delta, Done, IncompleteStreamError, Resume
from tokenrelay.events import FinishEvent, TextDelta, UsageEvent
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.sse import ServerSentEvent

WORDS = [f"w{i} " for i in range(40)]
ANSWER = "".join(WORDS)


def paced(gap: float = 0.004) -> ScriptedBackend:
    steps: list[object] = []
    for word in WORDS:
        steps += [TextDelta(word), Pause(gap)]
    return ScriptedBackend([*steps, UsageEvent(3, len(WORDS)), FinishEvent("stop")])  # type: ignore[list-item]


@asynccontextmanager
async def serve(backend: Backend, **settings: object) -> AsyncIterator[tuple[str, Relay]]:
    relay = Relay(backend, Settings(backend="synthetic", **settings))  # type: ignore[arg-type]
    async with running_server(create_app(relay=relay)) as url:
        yield url, relay


@asynccontextmanager
async def behind_proxy(url: str) -> AsyncIterator[tuple[str, CuttingProxy]]:
    proxy = CuttingProxy("127.0.0.1", int(url.rsplit(":", 1)[1]))
    async with proxy.serve() as proxied:
        yield proxied, proxy


def text(data: list[dict[str, object]]) -> str:
    return "".join(str(d["delta"]) for d in data if "delta" in d)


async def test_resume_after_every_event_id_gives_exactly_the_rest() -> None:
    # Every integer cursor is tried, also ids that a coalesced frame would hide: stream one frame per event.
    async with serve(paced(0), coalesce_max_ms=0) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            run_id = r.headers["x-run-id"]
            full = [e for e in await read_stream(r) if isinstance(e, ServerSentEvent)]
        ids = [int(e.id) for e in full]
        last = ids[-1]
        for cursor in range(last):
            via_header = {"headers": {"last-event-id": str(cursor)}}
            via_query = {"params": {"last_event_id": str(cursor)}}
            for how in (via_header, via_query):
                async with client.stream("GET", f"/api/runs/{run_id}/stream", **how) as r:  # type: ignore[arg-type]
                    assert r.status_code == 200
                    assert r.headers["x-run-id"] == run_id
                    rest = [e for e in await read_stream(r) if isinstance(e, ServerSentEvent)]
                assert all(int(e.id) > cursor for e in rest)
                before = [e for e in full if int(e.id) <= cursor]
                assert text(payloads(before) + payloads(rest)) == ANSWER  # type: ignore[arg-type]
                assert payloads(rest)[-1] == payloads(full)[-1]  # type: ignore[arg-type]
        # Nothing after the last id of a finished run: 204, which also stops an EventSource.
        assert (await client.get(f"/api/runs/{run_id}/stream", headers={"last-event-id": str(last)})).status_code == 204
        r = await client.get("/api/chat/stream", params={"run_id": run_id}, headers={"last-event-id": str(last)})
        assert r.status_code == 204
        assert (await client.get("/api/runs/AAAAAAAAAAAAAAAAAAAAAA/stream")).status_code == 404
        r = await client.get(f"/api/runs/{run_id}/stream", headers={"last-event-id": "x"})
        assert r.status_code == 422


async def test_every_stream_starts_with_a_retry_hint() -> None:
    for retry_ms, first in ((1000, b"retry: 1000\n\n"), (250, b"retry: 250\n\n"), (0, b"id: ")):
        async with serve(ScriptedBackend([TextDelta("a"), FinishEvent()]), retry_ms=retry_ms) as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                    body = b"".join([chunk async for chunk in r.aiter_raw()])
        assert body.startswith(first)


async def test_detach_keeps_the_run_going_for_a_resume() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(0.3), TextDelta("b"), FinishEvent("stop")])
    async with serve(backend, on_disconnect="detach", detach_grace_s=30) as (url, relay):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]
                first = await anext(aiter_events(r))
            assert relay.runs.active_runs == 1  # the viewer left; the run did not
            async with client.stream("GET", f"/api/runs/{run_id}/stream", headers={"last-event-id": first.id}) as r:
                rest = payloads(await read_stream(r))
        assert text(rest) == "b"
        assert rest[-1]["finish_reason"] == "stop"
        assert not backend.cancelled.is_set()


async def test_detached_run_is_cancelled_when_nobody_comes_back_and_its_partial_answer_kept() -> None:
    backend = ScriptedBackend([TextDelta("partial"), Pause(60)])
    async with serve(backend, on_disconnect="detach", detach_grace_s=0.1) as (url, relay):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            body = {"message": "hi", "user_id": "ann", "conversation_id": "c1"}
            async with client.stream("POST", "/api/chat/stream", json=body) as r:
                run_id = r.headers["x-run-id"]
                first = await anext(aiter_events(r))
            await asyncio.wait_for(backend.cancelled.wait(), 5)
            await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=5, what="the run to end")
            params = {"user_id": "ann"}
            headers = {"last-event-id": first.id}
            async with client.stream("GET", f"/api/runs/{run_id}/stream", params=params, headers=headers) as r:
                rest = payloads(await read_stream(r))
            assert rest[-1]["finish_reason"] == "cancelled"
            messages = (await client.get("/api/conversations/c1/messages", params=params)).json()["messages"]
        assert messages[-1]["content"] == "partial"
        assert messages[-1]["status"] == "cancelled"


async def test_cancel_policy_a_resumed_viewer_keeps_the_run_alive_until_it_leaves() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with (
        serve(backend, on_disconnect="cancel") as (url, relay),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            run_id = r.headers["x-run-id"]
            reading = aiter_events(r)  # kept: a dropped generator closes its response, which is a disconnect
            await anext(reading)
            async with client.stream("GET", f"/api/runs/{run_id}/stream", headers={"last-event-id": "1"}) as again:
                assert again.status_code == 200
                await wait_for_async(lambda: relay.runs.subscribers == 2, timeout=5, what="two viewers")
        # Both left: now it is cancelled.
        await asyncio.wait_for(backend.cancelled.wait(), 5)


async def aiter_events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    from tokenrelay.sse import SSEDecoder

    decoder = SSEDecoder()
    async for chunk in response.aiter_raw():
        for item in decoder.feed(chunk):
            if isinstance(item, ServerSentEvent):
                yield item


def check_unbroken(events: list[object]) -> str:
    ids = [int(e.id) for e in events if isinstance(e, Delta | Done)]
    assert ids == sorted(set(ids)), "an event was delivered twice or out of order"
    assert isinstance(events[-1], Done)
    assert events[-1].finish_reason == "stop"
    return "".join(e.text for e in events if isinstance(e, Delta))


async def test_the_client_resumes_a_cut_stream_by_itself() -> None:
    async with serve(paced(), on_disconnect="detach", retry_ms=20) as (url, _), behind_proxy(url) as (proxied, proxy):
        proxy.cut_next(450, times=3)  # the POST and the first two resumes are each cut after a few frames
        async with AsyncClient(proxied, resume=Resume(backoff_s=0.01)) as client:
            events = [e async for e in client.stream_chat("hi")]
    assert check_unbroken(events) == ANSWER  # type: ignore[arg-type]
    assert proxy.cut == 3
    assert proxy.connections == 4


async def test_the_sync_client_resumes_too() -> None:
    async with serve(paced(), on_disconnect="detach", retry_ms=20) as (url, _), behind_proxy(url) as (proxied, proxy):
        proxy.cut_next(450)

        def run() -> list[object]:
            with Client(proxied, resume=Resume(backoff_s=0.01)) as client:
                return list(client.stream_chat("hi"))

        events = await asyncio.to_thread(run)
    assert check_unbroken(events) == ANSWER
    assert proxy.cut == 1


async def test_the_client_gives_up_after_its_retries_with_what_it_had() -> None:
    async with (
        serve(paced(0.02), on_disconnect="detach", retry_ms=20) as (url, _),
        behind_proxy(url) as (proxied, proxy),
    ):
        proxy.cut_next(450)
        proxy.cut_next(0, times=10)  # every resume dies before a byte
        async with AsyncClient(proxied, resume=Resume(max_retries=2, backoff_s=0.01)) as client:
            seen: list[object] = []
            with pytest.raises(IncompleteStreamError) as info:
                async for event in client.stream_chat("hi"):
                    seen.append(event)
    assert proxy.connections == 3  # the POST and two resumes
    assert info.value.text == "".join(e.text for e in seen if isinstance(e, Delta))
    assert info.value.text
    assert ANSWER.startswith(info.value.text)
    assert info.value.last_event_id == [e for e in seen if isinstance(e, Delta)][-1].id


async def test_the_client_waits_as_long_as_the_servers_retry_hint_says() -> None:
    async with serve(paced(), on_disconnect="detach", retry_ms=400) as (url, _), behind_proxy(url) as (proxied, proxy):
        proxy.cut_next(450)
        async with AsyncClient(proxied, resume=Resume(backoff_s=0.001)) as client:
            started = time.monotonic()
            events = [e async for e in client.stream_chat("hi")]
            elapsed = time.monotonic() - started
    assert check_unbroken(events) == ANSWER  # type: ignore[arg-type]
    assert elapsed >= 0.4


async def test_the_client_follows_a_run_by_id_and_cancels_it() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with serve(backend, on_disconnect="detach") as (url, _), AsyncClient(url) as client:
        async with httpx.AsyncClient(base_url=url, timeout=30) as raw:
            async with raw.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]
        follow = client.stream_run(run_id)
        assert await anext(follow) == Delta("a", "1")
        assert await client.cancel(run_id) is True
        rest = [e async for e in follow]
    assert isinstance(rest[-1], Done)
    assert rest[-1].finish_reason == "cancelled"
