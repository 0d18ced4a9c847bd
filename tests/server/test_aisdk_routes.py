"""useChat's endpoints and ``?protocol=`` selection, end to end through real uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server, wait_for_async
from tests.server.helpers import GatedBackend
from tokenrelay.backends import ScriptedBackend, SyntheticBackend
from tokenrelay.backends.base import Backend, BackendError, GenerateOptions, Message
from tokenrelay.backends.script_file import ScriptFileBackend
from tokenrelay.events import Event, TextDelta, ToolCallArgsDelta, ToolCallResult, ToolCallStart
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.server.factory import build_backend
from tokenrelay.sse import ServerSentEvent, SSEDecoder


class Frames:
    """An SSE response read incrementally: ``until`` reads just far enough, within a timeout."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[ServerSentEvent] = []
        self._decoder = SSEDecoder()
        self._raw = response.aiter_raw()

    @property
    def chunks(self) -> list[Any]:
        return [json.loads(e.data) if e.data != "[DONE]" else "[DONE]" for e in self.events]

    async def until(self, predicate: Callable[[list[Any]], bool], timeout: float = 5) -> list[Any]:
        async with asyncio.timeout(timeout):
            while not predicate(self.chunks):
                try:
                    data = await anext(self._raw)
                except StopAsyncIteration:
                    break
                self.events.extend(e for e in self._decoder.feed(data) if isinstance(e, ServerSentEvent))
        return self.chunks

    async def all(self) -> list[Any]:
        return await self.until(lambda _: False)


def text_of(chunks: list[Any]) -> str:
    return "".join(c["delta"] for c in chunks if isinstance(c, dict) and c.get("type") == "text-delta")


def has_text(text: str) -> Callable[[list[Any]], bool]:
    return lambda chunks: text in text_of(chunks)


def ui_message(role: str, text: str, id_: str = "m") -> dict[str, Any]:
    return {"id": id_, "role": role, "parts": [{"type": "text", "text": text}]}


def use_chat_body(chat_id: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message", "messageId": None}


@asynccontextmanager
async def serve(backend: Backend, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Relay]]:
    relay = Relay(backend, Settings(backend="synthetic", **settings))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client, relay


async def test_use_chat_request_gets_the_ui_message_stream() -> None:
    async with serve(SyntheticBackend(tokens=4, interval_ms=1)) as (client, _):
        body = use_chat_body("chat-1", ui_message("user", "hi"))
        async with client.stream("POST", "/api/chat", json=body) as r:
            assert r.status_code == 200
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["x-conversation-id"] == "chat-1"
            chunks = await Frames(r).all()
    assert [c["type"] for c in chunks[:3]] == ["start", "start-step", "text-start"]
    assert chunks[0]["messageId"] == r.headers["x-run-id"]
    assert text_of(chunks) == "You said: hi. Tokens "
    assert chunks[-3:-1] == [
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop", "messageMetadata": {"usage": {"inputTokens": 1, "outputTokens": 4}}},
    ]
    assert chunks[-1] == "[DONE]"


async def test_client_transcript_is_used_only_while_the_server_has_no_history() -> None:
    backend = ScriptedBackend([TextDelta("ok")])
    async with serve(backend) as (client, _):
        first = use_chat_body(
            "restored",
            ui_message("user", "earlier question"),
            ui_message("assistant", "earlier answer"),
            ui_message("user", "now"),
        )
        r = await client.post("/api/chat", json=first)
        assert r.status_code == 200
        # The next request's transcript differs from what the server recorded: the server's history wins.
        second = use_chat_body(
            "restored", ui_message("user", "tampered"), ui_message("assistant", "ok"), ui_message("user", "and then?")
        )
        assert (await client.post("/api/chat", json=second)).status_code == 200
    assert backend.calls[0] == [
        Message("user", "earlier question"),
        Message("assistant", "earlier answer"),
        Message("user", "now"),
    ]
    # Compared by role and text: the recorded answer also carries its parts (text, finish).
    turns = [(m.role, m.content) for m in backend.calls[1]]
    assert turns == [*((m.role, m.content) for m in backend.calls[0]), ("assistant", "ok"), ("user", "and then?")]


async def test_only_text_parts_of_the_last_user_message_are_the_message() -> None:
    backend = ScriptedBackend([TextDelta("ok")])
    async with serve(backend) as (client, _):
        last = {
            "id": "u2",
            "role": "user",
            "parts": [
                {"type": "file", "url": "data:text/plain;base64,aGk=", "mediaType": "text/plain"},
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "there"},
            ],
        }
        assert (await client.post("/api/chat", json=use_chat_body("c", last))).status_code == 200
    assert backend.calls[0] == [Message("user", "Hello there")]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"id": "c", "messages": []}, 422, "messages"),
        ({"id": "bad id!", "messages": [ui_message("user", "hi")]}, 422, "id"),
        ({"messages": [ui_message("user", "hi")]}, 422, "id"),
        ({"id": "c", "messages": [ui_message("assistant", "hi")]}, 422, "messages"),
        ({"id": "c", "messages": [ui_message("user", "  ")]}, 422, "messages"),
        ({"id": "c", "messages": [ui_message("user", "x" * 40)]}, 413, "messages"),
        ({"id": "c", "messages": [{"role": "robot", "parts": []}]}, 422, "messages.0.role"),
    ],
)
async def test_bad_use_chat_bodies_are_refused_before_any_run(body: dict[str, Any], status: int, field: str) -> None:
    backend = ScriptedBackend([TextDelta("ok")])
    async with serve(backend, max_message_bytes=32) as (client, _):
        r = await client.post("/api/chat", json=body)
    assert r.status_code == status
    assert r.json()["error"]["field"] == field
    assert backend.calls == []


async def test_resume_replays_the_running_answer_and_204_when_nothing_runs() -> None:
    backend = GatedBackend()
    async with serve(backend) as (client, relay):
        assert (await client.get("/api/chat/chat-9/stream")).status_code == 204
        body = use_chat_body("chat-9", ui_message("user", "hi"))
        async with client.stream("POST", "/api/chat", json=body) as first:
            original = Frames(first)
            await original.until(has_text("one"))
            async with client.stream("GET", "/api/chat/chat-9/stream") as again:
                assert again.status_code == 200
                assert again.headers["x-vercel-ai-ui-message-stream"] == "v1"
                replay = Frames(again)
                await replay.until(has_text("one"))
                # Someone else, or the same chat id as another user, has nothing to resume.
                other = await client.get("/api/chat/chat-9/stream", params={"user_id": "mallory"})
                assert other.status_code == 204
                backend.gate.set()
                assert await replay.all() == await original.all()
        assert text_of(original.chunks) == "one two"
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=2, what="the run to end")
        assert (await client.get("/api/chat/chat-9/stream")).status_code == 204


async def test_resume_after_last_event_id_reopens_and_continues_the_same_part() -> None:
    backend = GatedBackend()
    async with serve(backend) as (client, _):
        body = use_chat_body("chat-5", ui_message("user", "hi"))
        async with client.stream("POST", "/api/chat", json=body) as r:
            first = Frames(r)
            await first.until(has_text("one"))
            async with client.stream("GET", "/api/chat/chat-5/stream", headers={"last-event-id": "1"}) as again:
                backend.gate.set()
                chunks = await Frames(again).all()
    # The part that was in flight is re-opened (same id) before its next delta: `ai` refuses a delta for a part the
    # stream it reads never started.
    assert chunks == [
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": " two"},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    ]


async def test_stop_disconnect_cancels_the_run() -> None:
    backend = GatedBackend()
    async with serve(backend, on_disconnect="cancel") as (client, relay):
        body = use_chat_body("chat-s", ui_message("user", "hi"))
        async with client.stream("POST", "/api/chat", json=body) as r:
            await Frames(r).until(has_text("one"))
        await asyncio.wait_for(backend.cancelled.wait(), 2)
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=2, what="active_runs to drop to 0")
        assert (await client.get("/api/chat/chat-s/stream")).status_code == 204


async def test_user_id_from_the_query_for_both_endpoints() -> None:
    backend = GatedBackend()
    async with serve(backend) as (client, relay):
        body = use_chat_body("shared-id", ui_message("user", "hi"))
        async with client.stream("POST", "/api/chat", params={"user_id": "alice"}, json=body) as r:
            first = Frames(r)  # kept: a dropped reader closes the response, and that would cancel the run
            await first.until(has_text("one"))
            info = await relay.store.get(r.headers["x-run-id"])
            assert info is not None
            assert info.user_id == "alice"
            assert (await client.get("/api/chat/shared-id/stream")).status_code == 204  # anonymous
            async with client.stream("GET", "/api/chat/shared-id/stream", params={"user_id": "alice"}) as again:
                assert again.status_code == 200
                backend.gate.set()
                assert text_of(await Frames(again).all()) == "one two"


async def test_stream_routes_pick_the_protocol_per_request() -> None:
    backend = ScriptedBackend([TextDelta("Hi"), ToolCallStart("c1", "t"), ToolCallArgsDelta("c1", "{}")])
    async with serve(backend) as (client, _):
        async with client.stream("POST", "/api/chat/stream?protocol=ai-sdk", json={"message": "x"}) as r:
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            chunks = await Frames(r).all()
            run_id = r.headers["x-run-id"]
        assert chunks[0]["type"] == "start"
        assert chunks[-1] == "[DONE]"
        params = {"message": "x", "protocol": "openai"}
        async with client.stream("GET", "/api/chat/stream", params=params) as r:
            chunks = await Frames(r).all()
        assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
        assert chunks[-1] == "[DONE]"
        # No "retry:" hint before OpenAI's frames: the openai client would take it for an empty event.
        assert (await client.get("/api/chat/stream", params=params)).content.startswith(b"data: {")
        assert (await client.get("/api/chat/stream", params={"message": "x"})).content.startswith(b"retry: ")
        # A resume in the AI SDK protocol after event 2 re-opens the tool call that was in flight (same id, the
        # arguments so far: none), then continues it; the message itself is not started again.
        r = await client.get(f"/api/runs/{run_id}/stream", params={"protocol": "ai-sdk", "last_event_id": "2"})
        tail = [json.loads(e.data) if e.data != "[DONE]" else e.data for e in SSEDecoder().feed(r.content)]
        assert tail[0] == {"type": "tool-input-start", "toolCallId": "c1", "toolName": "t", "providerExecuted": True}
        assert tail[1] == {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": "{}"}
        assert not any(isinstance(c, dict) and c["type"] in {"start", "start-step"} for c in tail)
        assert sum(1 for c in tail if isinstance(c, dict) and c["type"] == "tool-input-start") == 1
        bad = await client.post("/api/chat/stream?protocol=smoke-signals", json={"message": "x"})
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "protocol"
        assert len(backend.calls) == 4  # the refused request never started a run


def test_script_file_backend_picks_the_script_by_message(tmp_path: Path) -> None:
    script = {
        "weather?": [
            {"type": "tool-call-start", "call_id": "c1", "name": "get_weather"},
            {"pause": 0},
            {"type": "tool-call-result", "call_id": "c1", "output": "sunny"},
        ],
        "fail": [{"error": {"code": "model_error", "message": "it broke", "retryable": True}}],
        "*": [{"type": "text-delta", "text": "Hello"}],
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    backend = build_backend(Settings(backend="synthetic", synthetic_script=path))
    assert isinstance(backend, ScriptFileBackend)

    async def run(message: str) -> list[Event]:
        return [e async for e in backend.stream([Message("user", message)], GenerateOptions())]

    assert asyncio.run(run(" weather? ")) == [ToolCallStart("c1", "get_weather"), ToolCallResult("c1", "sunny")]
    assert asyncio.run(run("anything")) == [TextDelta("Hello")]
    with pytest.raises(BackendError) as failed:
        asyncio.run(run("fail"))
    assert (failed.value.code, failed.value.message, failed.value.retryable) == ("model_error", "it broke", True)
    assert backend.describe()["streams_failed"] == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file"),
        ("{", "not valid JSON"),
        ('{"*": [{"type": "telepathy"}]}', "step 0: unknown event type 'telepathy'"),
        ('[{"pause": -1}]', "step 0: pause must be"),
    ],
)
def test_script_file_errors_name_the_file_and_step(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "script.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=r"script file .*script\.json") as exc:
        ScriptFileBackend.from_file(path)
    assert problem in str(exc.value)
