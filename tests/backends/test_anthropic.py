"""The anthropic backend against recorded Messages streams, parsed by the real anthropic SDK."""

from __future__ import annotations

from tests.backends.conftest import collect, texts
from tests.backends.providers import anthropic as backend
from tests.backends.replay import ReplayServer
from tokenrelay.backends.anthropic import _takes_temperature, anthropic_messages
from tokenrelay.backends.base import Message
from tokenrelay.events import (
    FinishEvent,
    ReasoningDelta,
    UsageEvent,
)


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
