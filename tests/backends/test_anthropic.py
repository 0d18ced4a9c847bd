"""The anthropic backend against recorded Messages streams, parsed by the real anthropic SDK."""

from __future__ import annotations

import json

import pytest

from tests.backends.conftest import CANCEL_BUDGET_S, cancel_mid_stream, collect, run, texts
from tests.backends.replay import ReplayServer
from tokenrelay.backends.anthropic import AnthropicBackend, _takes_temperature, anthropic_messages
from tokenrelay.backends.base import BackendError, Message
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageEvent,
)


def backend(replay: ReplayServer, **kwargs: object) -> AnthropicBackend:
    options: dict[str, object] = {
        "model": "claude-sonnet-4-6",
        "base_url": replay.url,
        "api_key": "sk-ant-test",
        "max_retries": 0,
    }
    return AnthropicBackend(**(options | kwargs))  # type: ignore[arg-type]


async def test_streams_text_usage_and_finish(replay: ReplayServer) -> None:
    replay.reply("anthropic/text.sse")
    events = await collect(backend(replay))
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("The capital"),
        TextDelta(" of France is"),
        TextDelta(" Paris."),
    ]
    assert events[-2:] == [UsageEvent(25, 12), FinishEvent("stop")]


async def test_request_has_system_apart_max_tokens_and_key_header(replay: ReplayServer) -> None:
    replay.reply("anthropic/text.sse")
    b = backend(replay, system_prompt="Be brief.", max_tokens=300, temperature=0.4)
    conversation = [Message("system", "Answer in French."), Message("user", "hi"), Message("assistant", "salut")]
    await collect(b, [*conversation, Message("user", "more")], max_tokens=77)
    request = replay.requests[0]
    assert request.path == "/v1/messages"
    # The key travels as x-api-key or, in newer SDKs, as a bearer token.
    assert "sk-ant-test" in (request.headers.get("x-api-key", ""), request.headers.get("authorization", "")[7:])
    assert "anthropic-version" in request.headers
    body = request.json()
    assert body["model"] == "claude-sonnet-4-6"
    assert body["stream"] is True
    assert body["max_tokens"] == 77
    # Sampling parameters go only to an API whose SDK still has them.
    assert body.get("temperature", 0.4) == 0.4
    assert ("temperature" in body) == _takes_temperature()
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "salut"},
        {"role": "user", "content": "more"},
    ]


def test_messages_alternate_and_start_with_the_user() -> None:
    system, turns = anthropic_messages(
        [
            Message("assistant", "Hello! How can I help?"),
            Message("user", "a"),
            Message("user", "b"),
            Message("tool", "42"),
            Message("assistant", "c"),
        ]
    )
    assert system == []
    assert turns == [
        {"role": "user", "content": "a\n\nb\n\n[tool output]\n42"},
        {"role": "assistant", "content": "c"},
    ]


async def test_thinking_deltas_are_reasoning(replay: ReplayServer) -> None:
    replay.reply("anthropic/thinking.sse")
    b = backend(replay, max_tokens=4096, thinking_budget=2048, temperature=0.7)
    events = await collect(b)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3"
    assert texts(events) == "27 * 453 = 12,231"
    # Prompt-cache reads count as input; the usage comes with the message_delta.
    assert events[-2:] == [UsageEvent(41 + 2048, 86), FinishEvent("stop")]
    body = replay.requests[0].json()
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in body  # thinking fixes it; the API rejects any other


async def test_tool_use_with_input_json_deltas(replay: ReplayServer) -> None:
    replay.reply("anthropic/tool_use.sse")
    events = await collect(backend(replay))
    assert texts(events) == "Okay, let's check the weather for Paris."
    start = next(e for e in events if isinstance(e, ToolCallStart))
    assert start == ToolCallStart("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    fragments = [e for e in events if isinstance(e, ToolCallArgsDelta)]
    assert {e.call_id for e in fragments} == {start.call_id}
    assert json.loads("".join(e.delta for e in fragments)) == {"city": "Paris", "unit": "celsius"}
    assert events[-2:] == [UsageEvent(472, 89), FinishEvent("tool_calls")]


async def test_max_tokens_is_a_length_finish(replay: ReplayServer) -> None:
    replay.reply("anthropic/max_tokens.sse")
    events = await collect(backend(replay))
    assert texts(events) == "Once upon a time"
    assert events[-1] == FinishEvent("length")


async def test_overloaded_error_event_mid_stream_is_retryable(replay: ReplayServer) -> None:
    replay.reply("anthropic/overloaded_in_stream.sse")
    events = await run(backend(replay))
    assert texts(events) == "The capital"
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("overloaded", True)
    assert error.message == "anthropic: the upstream service is overloaded: Overloaded"
    assert events[-1] == FinishEvent("error")


@pytest.mark.parametrize(
    ("fixture", "status", "headers", "code", "retryable", "words"),
    [
        ("error_401.json", 401, {}, "auth_error", False, ["HTTP 401", "invalid x-api-key"]),
        ("error_429.json", 429, {"retry-after": "12"}, "rate_limited", True, ["HTTP 429", "retry after 12s"]),
        ("error_529.json", 529, {}, "overloaded", True, ["HTTP 529", "Overloaded"]),
    ],
)
async def test_http_errors_become_error_events(
    replay: ReplayServer,
    fixture: str,
    status: int,
    headers: dict[str, str],
    code: str,
    retryable: bool,
    words: list[str],
) -> None:
    replay.reply(f"anthropic/{fixture}", status=status, headers=headers)
    events = await run(backend(replay))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == (code, retryable)
    for word in words:
        assert word in error.message
    assert events[-1] == FinishEvent("error")


async def test_connection_cut_mid_stream_is_a_retryable_error(replay: ReplayServer) -> None:
    replay.reply("anthropic/partial.sse", then="cut")
    events = await run(backend(replay))
    assert texts(events) == "The capital"
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("connection_error", True)


async def test_stream_that_ends_before_message_stop_is_an_error(replay: ReplayServer) -> None:
    replay.reply("anthropic/partial.sse")
    with pytest.raises(BackendError) as caught:
        await collect(backend(replay))
    assert caught.value.code == "connection_error"


async def test_cancelling_the_run_closes_the_upstream_response(replay: ReplayServer) -> None:
    reply = replay.reply("anthropic/partial.sse", then="hold")
    b = backend(replay)
    took, events = await cancel_mid_stream(b, reply)
    assert took < CANCEL_BUDGET_S, f"the upstream saw the client leave after {took * 1000:.0f} ms"
    assert texts(events) == "The capital"
    assert b.stats.cancelled == 1
