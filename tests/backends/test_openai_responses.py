"""The openai backend with ``--openai-api responses``, against recorded Responses API streams."""

from __future__ import annotations

import json

import pytest

from tests.backends.conftest import CANCEL_BUDGET_S, cancel_mid_stream, collect, run, texts
from tests.backends.replay import ReplayServer
from tokenrelay.backends.base import Message
from tokenrelay.backends.openai_responses import OpenAIResponsesBackend
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageEvent,
)


def backend(replay: ReplayServer, **kwargs: object) -> OpenAIResponsesBackend:
    options: dict[str, object] = {"model": "gpt-4.1-mini", "base_url": f"{replay.url}/v1", "max_retries": 0}
    return OpenAIResponsesBackend(**(options | kwargs))  # type: ignore[arg-type]


async def test_streams_text_usage_and_finish(replay: ReplayServer) -> None:
    replay.reply("openai_responses/text.sse")
    events = await collect(backend(replay))
    assert texts(events) == "The capital of France is Paris."
    assert len([e for e in events if isinstance(e, TextDelta)]) == 7
    assert events[-2:] == [UsageEvent(31, 8), FinishEvent("stop")]


async def test_request_uses_input_instructions_and_max_output_tokens(replay: ReplayServer) -> None:
    replay.reply("openai_responses/text.sse")
    b = backend(replay, system_prompt="Be brief.", max_tokens=64, temperature=0.3)
    await collect(b, [Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")])
    request = replay.requests[0]
    assert request.path == "/v1/responses"
    body = request.json()
    assert body["stream"] is True
    assert body["instructions"] == "Be brief."
    assert body["max_output_tokens"] == 64
    assert body["temperature"] == 0.3
    assert body["input"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]


async def test_reasoning_summary_then_a_function_call(replay: ReplayServer) -> None:
    replay.reply("openai_responses/reasoning_tool_call.sse")
    events = await collect(backend(replay))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning.startswith("**Checking the weather**")
    assert reasoning.endswith("I should call get_weather.")
    start = next(e for e in events if isinstance(e, ToolCallStart))
    assert start == ToolCallStart("call_V3oU8kQ2mR9xLp4sNd7bTe1Z", "get_weather")
    args = "".join(e.delta for e in events if isinstance(e, ToolCallArgsDelta))
    assert all(e.call_id == start.call_id for e in events if isinstance(e, ToolCallArgsDelta))
    assert json.loads(args) == {"city": "Paris"}
    assert events[-2:] == [UsageEvent(62, 210), FinishEvent("tool_calls")]


async def test_incomplete_at_max_output_tokens_is_a_length_finish(replay: ReplayServer) -> None:
    replay.reply("openai_responses/incomplete.sse")
    events = await collect(backend(replay))
    assert texts(events) == "Once upon a time"
    assert events[-2:] == [UsageEvent(18, 16), FinishEvent("length")]


@pytest.mark.parametrize(
    ("fixture", "code", "retryable", "words"),
    [
        ("failed.sse", "upstream_error", True, ["invalid content"]),
        ("error_event.sse", "rate_limited", True, ["Rate limit reached"]),
    ],
)
async def test_failures_in_the_stream_become_error_events(
    replay: ReplayServer, fixture: str, code: str, retryable: bool, words: list[str]
) -> None:
    replay.reply(f"openai_responses/{fixture}")
    events = await run(backend(replay))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == (code, retryable)
    for word in words:
        assert word in error.message
    assert events[-1] == FinishEvent("error")


async def test_http_error_before_the_stream(replay: ReplayServer) -> None:
    replay.reply("openai_chat/error_429.json", status=429, headers={"retry-after": "2"})
    events = await run(backend(replay))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("rate_limited", True)
    assert "retry after 2s" in error.message


async def test_connection_cut_mid_stream_is_a_retryable_error(replay: ReplayServer) -> None:
    replay.reply("openai_responses/partial.sse", then="cut")
    events = await run(backend(replay))
    assert texts(events) == "The capital"
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("connection_error", True)


async def test_cancelling_the_run_closes_the_upstream_response(replay: ReplayServer) -> None:
    reply = replay.reply("openai_responses/partial.sse", then="hold")
    b = backend(replay)
    took, events = await cancel_mid_stream(b, reply)
    assert took < CANCEL_BUDGET_S, f"the upstream saw the client leave after {took * 1000:.0f} ms"
    assert texts(events) == "The capital"
    assert b.stats.cancelled == 1
