"""AG-UI's endpoint and ``?protocol=ag-ui``, end to end through real uvicorn; every frame parsed by ``ag_ui.core``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest
from ag_ui.core import EventType

from tests.conftest import running_server, wait_for_async
from tests.protocols.test_agui_reference import CONTENT, Frame, Reducer, Verifier, parse
from tests.proxy import CuttingProxy
from tests.server.helpers import GatedBackend
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.backends.base import Backend, Message
from tokenrelay.backends.scripted import Approval
from tokenrelay.events import FinishEvent, TextDelta, ToolCallArgsDelta, ToolCallResult, ToolCallStart
from tokenrelay.server import Relay, Settings, create_app


@asynccontextmanager
async def serve(backend: Backend, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Relay]]:
    relay = Relay(backend, Settings(backend="synthetic", history="memory", **settings))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client, relay


def user(text: str, id_: str = "u1") -> dict[str, Any]:
    return {"id": id_, "role": "user", "content": text}


def run_input(thread: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What ``HttpAgent`` POSTs: every field of RunAgentInput."""
    body = {"threadId": thread, "runId": "client-run-1", "state": {}, "messages": list(messages)}
    return {**body, "tools": [], "context": [], "forwardedProps": {}, "protocolVersion": "1.0", **extra}


async def read(response: httpx.Response) -> list[Frame]:
    return parse(b"".join([chunk async for chunk in response.aiter_raw()]))


async def read_until_text(raw: AsyncIterator[bytes], text: str) -> list[Frame]:
    """Whole frames from ``raw`` until the answer's text holds ``text``."""
    data = b""
    async with asyncio.timeout(10):
        while text not in text_of(parse(data[: data.rfind(b"\n\n") + 2])):
            data += await anext(raw)
    return parse(data)


def text_of(frames: list[Frame]) -> str:
    return "".join(f.event.delta for f in frames if f.type == EventType.TEXT_MESSAGE_CONTENT)


async def test_a_run_agent_input_gets_the_agui_event_stream_of_a_tokenrelay_run() -> None:
    async with serve(SyntheticBackend(tokens=4, interval_ms=1)) as (client, _):
        async with client.stream("POST", "/api/ag-ui", json=run_input("thread-1", user("hi"))) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["x-conversation-id"] == "thread-1"
            frames = await read(r)
        Verifier().feed(frames)
        started, finished = frames[0].event, frames[-1].event
        assert (started.thread_id, started.run_id, started.protocol_version) == (
            "thread-1",
            r.headers["x-run-id"],
            "1.0",
        )
        assert finished.type == EventType.RUN_FINISHED
        assert finished.outcome is None
        assert text_of(frames) == "You said: hi. Tokens "
        # The run is an ordinary one: its answer is in the thread's history.
        history = (await client.get("/api/conversations/thread-1/messages")).json()["messages"]
        assert [(m["role"], m["content"], m["status"]) for m in history] == [
            ("user", "hi", "complete"),
            ("assistant", "You said: hi. Tokens ", "complete"),
        ]


async def test_any_run_can_be_read_in_agui_from_the_run_routes() -> None:
    async with serve(ScriptedBackend([TextDelta("a"), TextDelta("b"), FinishEvent("stop")])) as (client, _):
        r = await client.post("/api/chat/stream", json={"message": "hi"})
        run_id = r.headers["x-run-id"]
        async with client.stream("GET", f"/api/runs/{run_id}/stream", params={"protocol": "ag-ui"}) as again:
            frames = await read(again)
        Verifier().feed(frames)
        assert text_of(frames) == "ab"


async def test_the_clients_transcript_is_used_only_while_the_server_has_no_history() -> None:
    backend = ScriptedBackend([TextDelta("ok")])
    async with serve(backend) as (client, _):
        restored = [
            {"id": "s", "role": "system", "content": "Be brief."},
            user("earlier question", "u0"),
            {"id": "a0", "role": "assistant", "content": "earlier answer", "toolCalls": []},
            {"id": "t0", "role": "tool", "content": "a tool's result", "toolCallId": "c0"},
            {
                "id": "u1",
                "role": "user",
                "content": [{"type": "text", "text": "now "}, {"type": "text", "text": "this"}],
            },
        ]
        assert (await client.post("/api/ag-ui", json=run_input("restored", *restored))).status_code == 200
        second = run_input(
            "restored", user("tampered"), {"id": "a", "role": "assistant", "content": "ok"}, user("next")
        )
        assert (await client.post("/api/ag-ui", json=second)).status_code == 200
    assert backend.calls[0] == [
        Message("system", "Be brief."),
        Message("user", "earlier question"),
        Message("assistant", "earlier answer"),
        Message("user", "now this"),
    ]
    assert [(m.role, m.content) for m in backend.calls[1]][-2:] == [("assistant", "ok"), ("user", "next")]
    assert backend.calls[1][1] == Message("user", "earlier question")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"runId": "r", "messages": [user("x")]}, 422, "threadId"),
        ({"threadId": "t", "messages": [user("x")]}, 422, "runId"),
        ({"threadId": "../x", "runId": "r", "messages": [user("x")]}, 422, "threadId"),
        ({"threadId": "t", "runId": "r", "messages": []}, 422, "messages"),
        (
            {"threadId": "t", "runId": "r", "messages": [{"id": "a", "role": "assistant", "content": "x"}]},
            422,
            "messages",
        ),
        ({"threadId": "t", "runId": "r", "messages": [user("   ")]}, 422, "messages"),
        (
            {"threadId": "t", "runId": "r", "messages": [{"id": "u", "role": "robot", "content": "x"}]},
            422,
            "messages.0.role",
        ),
        ({"threadId": "t", "runId": "r", "messages": [user("a\x00b")]}, 422, "messages"),
        (
            {"threadId": "t", "runId": "r", "messages": [user("x")], "resume": [{"interruptId": "c"}]},
            422,
            "resume.0.status",
        ),
    ],
)
async def test_bad_input_is_refused_before_any_run_with_the_field_named(
    body: dict[str, Any], status: int, field: str
) -> None:
    backend = ScriptedBackend([TextDelta("never")])
    async with serve(backend) as (client, _):
        r = await client.post("/api/ag-ui", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    assert backend.calls == []


async def test_malformed_json_and_oversized_messages_are_refused() -> None:
    async with serve(ScriptedBackend([TextDelta("never")]), max_message_bytes=16) as (client, _):
        r = await client.post("/api/ag-ui", content=b"{", headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
        r = await client.post("/api/ag-ui", json=run_input("t", user("x" * 17)))
        assert (r.status_code, r.json()["error"]["code"]) == (413, "message_too_long")
        r = await client.post("/api/ag-ui", content=b"{}", headers={"content-type": "text/plain"})
        assert r.status_code == 415


async def test_a_tool_call_and_its_result_reach_the_client() -> None:
    backend = ScriptedBackend(
        [
            ToolCallStart("call_1", "get_weather"),
            ToolCallArgsDelta("call_1", '{"city": "Paris"}'),
            ToolCallResult("call_1", "sunny"),
            TextDelta("Sunny."),
            FinishEvent("stop"),
        ]
    )
    async with serve(backend) as (client, _):
        async with client.stream("POST", "/api/ag-ui", json=run_input("t", user("weather?"))) as r:
            frames = await read(r)
    Verifier().feed(frames)
    reduced = Reducer().feed(frames)
    parent = f"{r.headers['x-run-id']}-1"  # the assistant message that makes the call
    assert reduced.calls == {"call_1": {"name": "get_weather", "arguments": '{"city": "Paris"}', "parent": parent}}
    assert reduced.results == [("call_1", "sunny", False)]


async def test_a_resume_after_an_id_mid_message_reopens_it() -> None:
    backend = GatedBackend()
    async with serve(cast(Backend, backend)) as (client, _):
        async with client.stream("POST", "/api/ag-ui", json=run_input("t", user("hi"))) as r:
            run_id = r.headers["x-run-id"]
            first = await read_until_text(r.aiter_raw(), "one")  # RUN_STARTED, TEXT_MESSAGE_START, CONTENT "one"
        cursor = first[-1].id
        assert text_of(first) == "one"
        backend.gate.set()
        params = {"protocol": "ag-ui"}
        headers = {"last-event-id": str(cursor)}
        async with client.stream("GET", f"/api/runs/{run_id}/stream", params=params, headers=headers) as r:
            rest = await read(r)
    Verifier().feed(rest)
    assert [f.type.value for f in rest[:3]] == ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
    assert all(f.id > cursor for f in rest if f.type in CONTENT)
    assert Reducer().feed(first + rest).messages == {f"{run_id}-1": {"role": "assistant", "content": "one two"}}


async def test_a_cut_connection_resumes_from_its_last_id_with_nothing_lost_or_repeated() -> None:
    words = [TextDelta(f"w{i} ") for i in range(30)]
    steps: list[Any] = [s for word in words for s in (word, Pause(0.002))]
    backend = ScriptedBackend([*steps, FinishEvent("stop")])
    async with serve(backend, coalesce_max_ms=0) as (client, _):
        proxy = CuttingProxy("127.0.0.1", int(str(client.base_url).rsplit(":", 1)[1].rstrip("/")))
        async with proxy.serve() as proxied, httpx.AsyncClient(base_url=proxied, timeout=30) as cut_client:
            proxy.cut_next(900)  # the headers and a few frames, then the network is gone
            received: list[Frame] = []
            with pytest.raises(httpx.HTTPError):
                async with cut_client.stream("POST", "/api/ag-ui", json=run_input("t", user("hi"))) as r:
                    run_id, raw = r.headers["x-run-id"], b""
                    async for chunk in r.aiter_raw():
                        raw += chunk
            complete = raw[: raw.rfind(b"\n\n") + 2]  # a client reads whole frames only
            received = parse(complete)
            assert received
            assert proxy.cut == 1
            params, headers = {"protocol": "ag-ui"}, {"last-event-id": str(received[-1].id)}
            async with cut_client.stream("GET", f"/api/runs/{run_id}/stream", params=params, headers=headers) as r:
                rest = await read(r)
    Verifier().feed(rest)
    assert text_of(received) + text_of(rest) == "".join(w.text for w in words)
    assert rest[-1].type == EventType.RUN_FINISHED


async def test_a_client_that_leaves_cancels_the_run_under_the_cancel_policy() -> None:
    backend = ScriptedBackend([TextDelta("partial"), Pause(60)])
    async with serve(backend, on_disconnect="cancel") as (client, relay):
        async with client.stream("POST", "/api/ag-ui", json=run_input("left", user("hi"))) as r:
            await read_until_text(r.aiter_raw(), "partial")
        await asyncio.wait_for(backend.cancelled.wait(), 5)
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=5, what="the run to end")
        history = (await client.get("/api/conversations/left/messages")).json()["messages"]
    assert (history[-1]["content"], history[-1]["status"]) == ("partial", "cancelled")


async def test_a_cancelled_run_finishes_with_the_cancelled_outcome() -> None:
    backend = ScriptedBackend([TextDelta("partial"), Pause(60)])
    async with serve(backend) as (client, _):
        async with client.stream("POST", "/api/ag-ui", json=run_input("c", user("hi"))) as r:
            raw = r.aiter_raw()
            await read_until_text(raw, "partial")
            assert (await client.post(f"/api/runs/{r.headers['x-run-id']}/cancel")).json()["cancelled"] is True
            frames = parse(b"".join([chunk async for chunk in raw]))
    assert frames[-1].type == EventType.RUN_FINISHED
    assert frames[-1].event.outcome.type == "cancelled"


async def test_an_approval_is_an_interrupt_and_the_resume_entry_goes_on_with_the_same_run() -> None:
    backend = ScriptedBackend(
        [
            TextDelta("Deleting."),
            Approval("call_7", "delete_file", '{"path": "x"}', output="deleted"),
            TextDelta("Done."),
        ]
    )
    async with serve(backend) as (client, _):
        async with client.stream("POST", "/api/ag-ui", json=run_input("appr", user("delete x"))) as r:
            run_id = r.headers["x-run-id"]
            first = await read(r)  # the response ends at the pause
        Verifier().feed(first)
        outcome = first[-1].event.outcome
        assert outcome.type == "interrupt"
        assert [(i.id, i.tool_call_id, i.reason) for i in outcome.interrupts] == [("call_7", "call_7", "tool_approval")]
        resume = [{"interruptId": "call_7", "status": "resolved", "payload": {"approved": True}}]
        body = run_input("appr", user("delete x"), resume=resume)
        async with client.stream("POST", "/api/ag-ui", json=body) as r:
            assert r.headers["x-run-id"] == run_id  # the same run goes on
            rest = await read(r)
        Verifier().feed(rest)
        assert rest[0].event.run_id == run_id
        reduced = Reducer().feed(first + rest)
        assert reduced.custom == [("tool-approval-response", {"toolCallId": "call_7", "approved": True})]
        assert reduced.results == [("call_7", "deleted", False)]
        assert text_of(rest) == "Done."
        # The same answer again is idempotent: it streams the continuation again; another answer is a conflict.
        assert (await client.post("/api/ag-ui", json=body)).status_code == 200
        denied = [{"interruptId": "call_7", "status": "cancelled"}]
        r = await client.post("/api/ag-ui", json=run_input("appr", user("x"), resume=denied))
        assert r.status_code == 409, r.text


@pytest.mark.parametrize(
    ("resume", "status", "field"),
    [
        ([{"interruptId": "nope", "status": "resolved", "payload": {"approved": True}}], 404, None),
        ([{"interruptId": "call_7", "status": "resolved", "payload": {"ok": 1}}], 422, "resume.0.payload"),
        ([{"interruptId": "call_7", "status": "resolved", "payload": {"approved": True, "reason": 3}}], 422, None),
    ],
)
async def test_a_bad_resume_entry_is_refused(resume: list[dict[str, Any]], status: int, field: str | None) -> None:
    backend = ScriptedBackend([Approval("call_7", "t")])
    async with serve(backend) as (client, _):
        async with client.stream("POST", "/api/ag-ui", json=run_input("bad", user("go"))) as r:
            await read(r)
        r = await client.post("/api/ag-ui", json=run_input("bad", user("go"), resume=resume))
        assert r.status_code == status, r.text
        if field is not None:
            assert r.json()["error"]["field"] == field
        # A thread with no run at all has nothing to answer.
        r = await client.post("/api/ag-ui", json=run_input("other", user("go"), resume=resume))
        assert r.status_code in (404, 422)
