"""The seed encoder: the bytes of the original ``StreamingResponse`` recipe, with the run's ids."""

from __future__ import annotations

import json

from tests.protocols.helpers import CTX, chunks, frames, numbered
from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    MetadataEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.protocols import SeedEncoder
from tokenrelay.protocols.seed import seed_frame


def seed(events: list[Event]) -> bytes:
    encoder = SeedEncoder(CTX)
    return encoder.open() + b"".join(encoder.encode([item]) for item in numbered(events))


def test_a_delta_is_written_byte_for_byte_as_json_dumps_writes_it() -> None:
    for text in ["Hi", 'quote " and \\ slash', "héllo — 世界 🎉", "line\nbreak", "a\ud800b"]:
        expected = b"id: 7\ndata: %s\n\n" % json.dumps({"delta": text}).encode()
        assert SeedEncoder(CTX).encode(numbered([TextDelta(text)], start=7)) == expected


def test_a_batch_is_one_write_of_every_frame_in_order() -> None:
    out = SeedEncoder(CTX).encode(numbered([TextDelta("a"), TextDelta("b")]))
    assert out == b'id: 1\ndata: {"delta": "a"}\n\nid: 2\ndata: {"delta": "b"}\n\n'


def test_every_event_kind_and_the_done_frame_with_usage() -> None:
    events: list[Event] = [
        MetadataEvent({"queue_position": 0}),
        ReasoningDelta("hm"),
        ToolCallStart("c1", "clock"),
        ToolCallArgsDelta("c1", "{}"),
        ToolCallResult("c1", "noon", is_error=True),
        TextDelta("It is noon."),
        UsageEvent(3, 4),
        FinishEvent("stop"),
    ]
    data = seed(events)
    assert [f.id for f in frames(data)] == ["1", "2", "3", "4", "5", "6", "8"]  # usage has no frame of its own
    assert chunks(data) == [
        {"metadata": {"queue_position": 0}},
        {"reasoning": "hm"},
        {"tool_call": {"id": "c1", "name": "clock"}},
        {"tool_call_delta": {"id": "c1", "arguments": "{}"}},
        {"tool_result": {"id": "c1", "output": "noon", "is_error": True}},
        {"delta": "It is noon."},
        {
            "done": True,
            "finish_reason": "stop",
            "run_id": "run1",
            "conversation_id": "conv1",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        },
    ]


def test_an_error_carries_retry_after_only_when_known() -> None:
    out = chunks(seed([ErrorEvent("rate_limited", "slow down", retryable=True, retry_after=2.0), ErrorEvent("x", "y")]))
    assert out == [
        {"error": {"code": "rate_limited", "message": "slow down", "retryable": True, "retry_after": 2.0}},
        {"error": {"code": "x", "message": "y", "retryable": False}},
    ]


def test_a_resume_after_the_usage_event_still_reports_usage() -> None:
    stored = numbered([TextDelta("a"), UsageEvent(1, 2), FinishEvent("length")])
    encoder = SeedEncoder(CTX)
    encoder.prime(stored[:2])
    (done,) = chunks(encoder.encode(stored[2:]))
    assert done["usage"] == {"input_tokens": 1, "output_tokens": 2}
    assert done["finish_reason"] == "length"


def test_seed_frame_is_json_dumps_with_an_id() -> None:
    assert seed_frame(3, {"done": True}) == b'id: 3\ndata: {"done": true}\n\n'
