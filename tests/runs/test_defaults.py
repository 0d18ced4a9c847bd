"""What users run: with the shipped settings (SQLite history, detach on disconnect) a dropped connection is not a
Stop. The client comes back and gets the whole answer; an explicit cancel still stops the run at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx

from tests.conftest import running_server, wait_for_async
from tests.runs.helpers import HeldBackend
from tests.server.helpers import payloads, read_stream
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.history.sql import SQLHistory
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.sse import ServerSentEvent, SSEDecoder


def test_the_shipped_policy_detaches_for_thirty_seconds() -> None:
    settings = Settings()
    assert (settings.on_disconnect, settings.detach_grace_s) == ("detach", 30.0)


async def test_with_the_defaults_a_dropped_client_resumes_and_gets_the_whole_answer() -> None:
    backend = HeldBackend([TextDelta("one"), TextDelta(" two"), FinishEvent("stop")], hold_before=TextDelta(" two"))
    relay = Relay(backend, Settings(backend="synthetic"))
    assert isinstance(relay.history, SQLHistory)  # the default history, in the test's own SQLite file
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            run_id, conversation_id = r.headers["x-run-id"], r.headers["x-conversation-id"]
            first = await anext(sse_events(r))
        # The connection is gone: the run counts its viewer out and goes on.
        await wait_for_async(lambda: relay.runs.subscribers == 0, timeout=5, what="the viewer to be counted out")
        assert relay.runs.active_runs == 1
        backend.gate.set()
        async with client.stream("GET", f"/api/runs/{run_id}/stream", headers={"last-event-id": first.id}) as r:
            rest = payloads(await read_stream(r))
        assert [p.get("delta") for p in rest[:-1]] == [" two"]
        assert rest[-1]["finish_reason"] == "stop"
        assert "saved" not in rest[-1]
        assert not backend.cancelled.is_set()
        params = {"user_id": "anonymous"}
        messages = (await client.get(f"/api/conversations/{conversation_id}/messages", params=params)).json()
        assert messages["messages"][-1]["content"] == "one two"


async def test_with_the_defaults_an_explicit_cancel_stops_the_run_at_once() -> None:
    backend = HeldBackend([TextDelta("one"), TextDelta(" two")], hold_before=TextDelta(" two"))
    relay = Relay(backend, Settings(backend="synthetic"))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            run_id = r.headers["x-run-id"]
            reading = sse_events(r)  # kept: a dropped generator closes its response
            await anext(reading)
            cancelled = await client.post(f"/api/runs/{run_id}/cancel")
            assert cancelled.json() == {"run_id": run_id, "cancelled": True}
            await asyncio.wait_for(backend.cancelled.wait(), 0.25)
            rest = [json.loads(e.data) async for e in reading]
        assert rest[-1]["finish_reason"] == "cancelled"
        assert relay.runs.active_runs == 0


async def sse_events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_raw():
        for item in decoder.feed(chunk):
            if isinstance(item, ServerSentEvent):
                yield item
