"""The openai backend (Chat Completions) against recorded wire bytes, parsed by the real openai SDK."""

from __future__ import annotations

from tests.backends.conftest import collect, run, texts
from tests.backends.providers import openai_chat as backend
from tests.backends.replay import ReplayServer
from tokenrelay.backends.base import Message
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    UsageEvent,
)


async def test_request_carries_model_system_prompt_limits_and_usage_option(replay: ReplayServer) -> None:
    replay.reply("openai_chat/text.sse")
    b = backend(replay, system_prompt="Be brief.", max_tokens=64, temperature=0.2)
    await collect(b, [Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")], max_tokens=9)
    request = replay.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    body = request.json()
    assert body["model"] == "gpt-4.1-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 9  # the per-run override wins; a compatible server gets the classic name
    assert body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]


async def test_api_key_is_sent_as_bearer_token(replay: ReplayServer) -> None:
    replay.reply("openai_chat/text.sse")
    await collect(backend(replay, api_key="sk-test-123"))
    assert replay.requests[0].headers["authorization"] == "Bearer sk-test-123"


async def test_reasoning_content_is_reasoning_not_answer(replay: ReplayServer) -> None:
    replay.reply("openai_chat/reasoning_content.sse")
    events = await collect(backend(replay))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == "The user asks for 17 * 3. 17 * 3 = 51."
    assert texts(events) == "17 × 3 = **51**"
    last_reasoning = max(i for i, e in enumerate(events) if isinstance(e, ReasoningDelta))
    first_text = min(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert last_reasoning < first_text
    assert events[-2:] == [UsageEvent(14, 96), FinishEvent("stop")]


async def test_reasoning_field_as_ollama_sends_it(replay: ReplayServer) -> None:
    replay.reply("openai_chat/reasoning.sse")
    events = await collect(backend(replay))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Okay, the user greets me."
    assert texts(events) == "Hello! How can I help?"
    assert events[-1] == FinishEvent("stop")


async def test_unreachable_server_is_a_retryable_connection_error(replay: ReplayServer) -> None:
    b = OpenAIChatBackend(model="m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    events = await run(b)
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("connection_error", True)


async def test_sdk_retries_a_5xx_before_the_first_byte(replay: ReplayServer) -> None:
    replay.reply("openai_chat/error_500.json", status=500, headers={"retry-after-ms": "10"})
    replay.reply("openai_chat/text.sse")
    events = await collect(backend(replay, max_retries=1))
    assert texts(events) == "The capital of France is Paris."
    assert len(replay.requests) == 2
