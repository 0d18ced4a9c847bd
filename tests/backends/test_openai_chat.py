"""The openai backend (Chat Completions) against recorded wire bytes, parsed by the real openai SDK."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.backends.conftest import CANCEL_BUDGET_S, HELLO, cancel_mid_stream, collect, run, texts
from tests.backends.replay import ReplayServer
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageEvent,
)


def backend(replay: ReplayServer, **kwargs: object) -> OpenAIChatBackend:
    options: dict[str, object] = {"model": "gpt-4.1-mini", "base_url": f"{replay.url}/v1", "max_retries": 0}
    return OpenAIChatBackend(**(options | kwargs))  # type: ignore[arg-type]


async def test_streams_text_usage_and_finish(replay: ReplayServer) -> None:
    replay.reply("openai_chat/text.sse")
    events = await collect(backend(replay))
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta(t) for t in ["The", " capital", " of", " France", " is", " Paris", "."]
    ]
    assert events[-2:] == [UsageEvent(24, 8), FinishEvent("stop")]


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


async def test_length_finish(replay: ReplayServer) -> None:
    replay.reply("openai_chat/length.sse")
    events = await collect(backend(replay))
    assert texts(events) == "Once upon a time"
    assert events[-1] == FinishEvent("length")


async def test_parallel_tool_calls_with_index_based_argument_deltas(replay: ReplayServer) -> None:
    replay.reply("openai_chat/tool_calls.sse")
    events = await collect(backend(replay))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [
        ToolCallStart("call_Qe4kX9nLr2VbTfW8yJ1sZcDm", "get_weather"),
        ToolCallStart("call_7HnJv0pQa3LsKx5RbYwE2uTg", "get_time"),
    ]
    args: dict[str, str] = {}
    for e in events:
        if isinstance(e, ToolCallArgsDelta):
            args[e.call_id] = args.get(e.call_id, "") + e.delta
    assert json.loads(args["call_Qe4kX9nLr2VbTfW8yJ1sZcDm"]) == {"city": "Paris", "unit": "c"}
    assert json.loads(args["call_7HnJv0pQa3LsKx5RbYwE2uTg"]) == {"timezone": "Europe/Paris"}
    # Every fragment comes after its call's start.
    first_args = next(i for i, e in enumerate(events) if isinstance(e, ToolCallArgsDelta))
    assert isinstance(events[first_args - 1], ToolCallStart)
    assert events[-2:] == [UsageEvent(88, 41), FinishEvent("tool_calls")]


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


@pytest.mark.parametrize(
    ("fixture", "status", "headers", "code", "retryable", "words"),
    [
        ("error_401.json", 401, {}, "auth_error", False, ["HTTP 401", "Incorrect API key", "--api-key"]),
        ("error_404.json", 404, {}, "not_found", False, ["HTTP 404", "gpt-4.2-nano", "--model"]),
        ("error_429.json", 429, {"retry-after": "7"}, "rate_limited", True, ["HTTP 429", "retry after 7s"]),
        ("error_500.json", 500, {}, "upstream_error", True, ["HTTP 500", "had an error"]),
        ("error_500.json", 503, {}, "upstream_error", True, ["HTTP 503"]),
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
    replay.reply(f"openai_chat/{fixture}", status=status, headers=headers)
    events = await run(backend(replay))
    error, finish = events[-2:]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message.startswith("openai: ")
    for word in words:
        assert word in error.message
    assert finish == FinishEvent("error")


async def test_error_inside_the_stream_keeps_the_text_before_it(replay: ReplayServer) -> None:
    replay.reply("openai_chat/in_stream_error.sse")
    events = await run(backend(replay))
    assert texts(events) == "Let me"
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert "had an error" in error.message
    assert events[-1] == FinishEvent("error")


async def test_connection_cut_mid_stream_is_a_retryable_error(replay: ReplayServer) -> None:
    replay.reply("openai_chat/partial.sse", then="cut")
    events = await run(backend(replay))
    assert texts(events) == "The capital of"
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("connection_error", True)
    assert "127.0.0.1" in error.message


async def test_stream_that_ends_without_a_finish_is_an_error(replay: ReplayServer) -> None:
    replay.reply("openai_chat/partial.sse")  # a clean end of the body, but no finish_reason and no [DONE]
    with pytest.raises(BackendError) as caught:
        await collect(backend(replay))
    assert caught.value.code == "connection_error"
    assert caught.value.retryable


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


async def test_cancelling_the_run_closes_the_upstream_response(replay: ReplayServer) -> None:
    reply = replay.reply("openai_chat/partial.sse", then="hold")
    b = backend(replay)
    took, events = await cancel_mid_stream(b, reply)
    assert took < CANCEL_BUDGET_S, f"the upstream saw the client leave after {took * 1000:.0f} ms"
    assert texts(events) == "The capital of"
    assert b.stats.cancelled == 1


async def test_closing_the_iterator_closes_the_upstream_response(replay: ReplayServer) -> None:
    reply = replay.reply("openai_chat/partial.sse", then="hold")
    gen = backend(replay).stream(HELLO, GenerateOptions())
    assert isinstance(await anext(gen), TextDelta)
    await gen.aclose()
    await asyncio.wait_for(reply.client_left.wait(), CANCEL_BUDGET_S)
