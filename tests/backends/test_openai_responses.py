"""The openai backend with ``--openai-api responses``, against recorded Responses API streams."""

from __future__ import annotations

from tests.backends.conftest import collect
from tests.backends.providers import openai_responses as backend
from tests.backends.replay import ReplayServer
from tokenrelay.backends.base import Message
from tokenrelay.events import (
    ReasoningDelta,
    ToolCallStart,
)


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
    # The function call itself is checked by the contract suite; this is the reasoning before it.
    replay.reply("openai_responses/reasoning_tool_call.sse")
    events = await collect(backend(replay))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning.startswith("**Checking the weather**")
    assert reasoning.endswith("I should call get_weather.")
    last_reasoning = max(i for i, e in enumerate(events) if isinstance(e, ReasoningDelta))
    assert last_reasoning < events.index(ToolCallStart("call_V3oU8kQ2mR9xLp4sNd7bTe1Z", "get_weather"))
