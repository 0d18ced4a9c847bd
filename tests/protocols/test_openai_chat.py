"""The OpenAI Chat Completions encoder and completion builder, as pure functions of a run's events."""

from __future__ import annotations

from typing import Any

from tests.protocols.helpers import AGENT_RUN, CTX, chunks, frames, numbered
from tokenrelay.events import ErrorEvent, Event, FinishEvent, TextDelta, ToolCallArgsDelta, ToolCallStart, UsageEvent
from tokenrelay.protocols import OpenAIChatEncoder
from tokenrelay.protocols.openai_chat import CompletionBuilder, model_id


def openai(events: list[Event], *, include_usage: bool = False) -> list[Any]:
    encoder = OpenAIChatEncoder(CTX, model="m", include_usage=include_usage, created=1)
    data = encoder.open() + b"".join(encoder.encode([item]) for item in numbered(events))
    assert all(e.id == "" for e in frames(data))  # OpenAI's frames have no ids
    return chunks(data)


def test_openai_chunks_have_the_chat_completion_chunk_shape() -> None:
    out = openai(AGENT_RUN, include_usage=True)
    assert out[0] == {
        "id": "chatcmpl-run1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    deltas = [c["choices"][0]["delta"] for c in out[1:-3]]
    assert deltas == [
        {"reasoning_content": "Look"},
        {"reasoning_content": " it up."},
        {"content": "Let me "},
        {"content": "check."},
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"content": "It is "},
        {"content": "sunny."},
    ]
    assert out[-3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert out[-2]["choices"] == []
    assert out[-2]["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert out[-1] == "[DONE]"


def test_openai_without_usage_requested_has_no_usage_chunk() -> None:
    out = openai([TextDelta("hi"), UsageEvent(1, 1), FinishEvent("length")])
    assert all("usage" not in c for c in out[:-1])
    assert out[-2]["choices"][0]["finish_reason"] == "length"
    assert out[-1] == "[DONE]"


def test_openai_error_mid_stream_is_one_error_object_then_nothing() -> None:
    out = openai([TextDelta("Hm"), ErrorEvent("model_error", "it broke", retryable=True), FinishEvent("error")])
    assert out[-1] == {"error": {"message": "it broke", "type": "server_error", "param": None, "code": "model_error"}}
    assert "[DONE]" not in out


def test_openai_resume_keeps_tool_call_indexes() -> None:
    events: list[Event] = [ToolCallStart("a", "x"), ToolCallStart("b", "y"), ToolCallArgsDelta("b", "{}")]
    encoder = OpenAIChatEncoder(CTX, model="m", created=1)
    stored = numbered(events)
    encoder.prime(stored[:2])
    assert encoder.open() == b""
    (chunk,) = chunks(encoder.encode(stored[2:]))
    assert chunk["choices"][0]["delta"] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}


def test_completion_builder_aggregates_a_run() -> None:
    builder = CompletionBuilder(CTX, model="m", created=1)
    for event in AGENT_RUN:
        builder.add(event)
    completion = builder.completion()
    assert completion["object"] == "chat.completion"
    message = completion["choices"][0]["message"]
    assert message["content"] == "Let me check.It is sunny."
    assert message["reasoning_content"] == "Look it up."
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    assert completion["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert builder.error is None


def test_model_id_names_the_backend_model() -> None:
    assert model_id({"model": "gpt-4o-mini"}, "openai") == "gpt-4o-mini"
    assert model_id({"model": "/models/SmolLM2-135M-Instruct-Q4_1.gguf"}, "local") == "SmolLM2-135M-Instruct-Q4_1.gguf"
    assert model_id({"tokens": 48}, "synthetic") == "synthetic"


def test_a_model_name_with_percent_signs_is_written_as_is() -> None:
    # The chunk envelope is a %-format built once per stream: the model's name must not be read as a format.
    encoder = OpenAIChatEncoder(CTX, model="50%d-%s", created=1)
    out = chunks(encoder.open() + encoder.encode(numbered([TextDelta("%s"), FinishEvent("stop")])))
    assert {c["model"] for c in out if isinstance(c, dict)} == {"50%d-%s"}
    assert out[1]["choices"][0]["delta"] == {"content": "%s"}
