"""The embedded model reports its input tokens: the prompt's count, exactly as llama.cpp itself counts it."""

from __future__ import annotations

import pytest

from tests.backends.test_local import backend  # noqa: F401  (the loaded model, a fixture)
from tokenrelay.backends import GenerateOptions, Message
from tokenrelay.backends.local import LocalBackend
from tokenrelay.events import FinishEvent, TextDelta, UsageEvent

pytestmark = pytest.mark.slow


async def usage_of(backend: LocalBackend, messages: list[Message]) -> UsageEvent:
    events = [e async for e in backend.stream(messages, GenerateOptions(max_tokens=8))]
    assert isinstance(events[-1], FinishEvent)
    assert any(isinstance(e, TextDelta) for e in events)
    (usage,) = [e for e in events if isinstance(e, UsageEvent)]
    return usage


def llama_cpp_count(backend: LocalBackend, messages: list[Message]) -> int:
    """llama.cpp's own prompt_tokens for the same prompt (system prompt first), from its non-streamed usage."""
    prompt = [{"role": "system", "content": backend.system_prompt}] + [
        {"role": m.role, "content": m.content} for m in messages
    ]
    completion = backend._llm.create_chat_completion(messages=prompt, max_tokens=1, seed=7)
    return int(completion["usage"]["prompt_tokens"])


async def test_input_tokens_are_the_prompts_count(backend: LocalBackend) -> None:
    short = [Message("user", "What is the capital of France?")]
    usage = await usage_of(backend, short)
    assert usage.input_tokens == llama_cpp_count(backend, short)
    assert usage.output_tokens is not None
    assert usage.output_tokens > 0


async def test_a_longer_conversation_counts_every_turn(backend: LocalBackend) -> None:
    short = [Message("user", "Hi")]
    longer = [
        Message("user", "Hi"),
        Message("assistant", "Hello! How can I help you today?"),
        Message("user", "Tell me about the moon, please."),
    ]
    first, second = await usage_of(backend, short), await usage_of(backend, longer)
    assert second.input_tokens == llama_cpp_count(backend, longer)
    assert first.input_tokens is not None
    assert second.input_tokens is not None
    assert second.input_tokens > first.input_tokens
