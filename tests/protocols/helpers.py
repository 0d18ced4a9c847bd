"""What the encoder tests share: a run's events, and the frames an encoder wrote, decoded back."""

from __future__ import annotations

import json
from typing import Any

from tokenrelay.events import (
    Event,
    FinishEvent,
    MetadataEvent,
    ReasoningDelta,
    StoredEvent,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.protocols import StreamContext
from tokenrelay.sse import ServerSentEvent, SSEDecoder

CTX = StreamContext(run_id="run1", conversation_id="conv1", user_id="u1")

AGENT_RUN: list[Event] = [
    MetadataEvent({"queue_position": 0}),
    ReasoningDelta("Look"),
    ReasoningDelta(" it up."),
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallStart("call_1", "get_weather"),
    ToolCallArgsDelta("call_1", '{"city": '),
    ToolCallArgsDelta("call_1", '"Paris"}'),
    ToolCallResult("call_1", "sunny, 21C"),
    TextDelta("It is "),
    TextDelta("sunny."),
    UsageEvent(12, 7),
    FinishEvent("stop"),
]


def numbered(events: list[Event], start: int = 1) -> list[StoredEvent]:
    return [StoredEvent(start + i, e) for i, e in enumerate(events)]


def frames(data: bytes) -> list[ServerSentEvent]:
    return [e for e in SSEDecoder().feed(data) if isinstance(e, ServerSentEvent)]


def chunks(data: bytes) -> list[Any]:
    return [json.loads(f.data) if f.data != "[DONE]" else "[DONE]" for f in frames(data)]
