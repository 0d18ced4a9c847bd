"""The event vocabulary: every event type round-trips through a dict, and a bad dict is a ValueError."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import orjson
import pytest

from tokenrelay.events import (
    ErrorEvent,
    Event,
    EventType,
    FinishEvent,
    MetadataEvent,
    ReasoningDelta,
    RunPaused,
    TextDelta,
    ToolApprovalRequest,
    ToolApprovalResponse,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
    event_from_dict,
    event_to_dict,
)

# One of each type, with every field away from its default where it has one.
SAMPLES: list[Event] = [
    TextDelta("Hello, ünïcode ✓"),
    ReasoningDelta("thinking"),
    ToolCallStart("call_1", "search"),
    ToolCallArgsDelta("call_1", '{"q": "x"}'),
    ToolCallResult("call_1", "found", is_error=True),
    UsageEvent(input_tokens=3, output_tokens=7),
    MetadataEvent({"agent": "triage", "nested": {"n": [1, 2]}}),
    ErrorEvent("rate_limited", "slow down", retryable=True, retry_after=1.5),
    FinishEvent("tool_calls"),
    FinishEvent("error", saved=False),
    ToolApprovalRequest("call_2", "delete_file", '{"path": "a"}'),
    ToolApprovalResponse("call_2", approved=False, reason="not that one"),
    RunPaused(1767225600.5),
]


def test_a_finish_says_saved_only_when_it_is_set() -> None:
    assert "saved" not in event_to_dict(FinishEvent("stop"))  # a log written without it reads the same
    assert event_to_dict(FinishEvent("stop", saved=False)) == {"type": "finish", "reason": "stop", "saved": False}
    assert event_from_dict({"type": "finish", "reason": "stop"}) == FinishEvent("stop", saved=None)


def test_the_samples_cover_every_event_type() -> None:
    assert {type(e) for e in SAMPLES} == set(typing.get_args(Event))
    assert {e.type for e in SAMPLES} == set(typing.get_args(EventType))


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_every_event_round_trips_through_json(event: Event) -> None:
    data = event_to_dict(event)
    assert next(iter(data)) == "type"
    assert data["type"] == event.type
    assert event_from_dict(orjson.loads(orjson.dumps(data))) == event


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (TextDelta("a"), {"type": "text-delta", "text": "a"}),
        (UsageEvent(), {"type": "usage", "input_tokens": None, "output_tokens": None}),
        (FinishEvent(), {"type": "finish", "reason": "stop"}),
    ],
)
def test_the_dict_is_the_fields_after_the_type(event: Event, expected: dict[str, Any]) -> None:
    assert list(event_to_dict(event).items()) == list(expected.items())


def test_defaults_fill_fields_the_dict_leaves_out() -> None:
    assert event_from_dict({"type": "error", "code": "x", "message": "y"}) == ErrorEvent("x", "y")
    assert event_from_dict({"type": "metadata"}) == MetadataEvent()


def test_reading_does_not_change_the_dict() -> None:
    data = {"type": "text-delta", "text": "a"}
    event_from_dict(data)
    assert data == {"type": "text-delta", "text": "a"}


@pytest.mark.parametrize("data", [{"type": "telepathy", "text": "a"}, {"text": "a"}, {"type": 3}, {"type": None}])
def test_an_unknown_type_is_a_value_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        event_from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "text-delta"},  # a field missing
        {"type": "text-delta", "text": "a", "colour": "red"},  # a field that is not the event's
        {"type": "tool-call-start", "call_id": "c"},
        {"type": "finish", "reason": "stop", "seq": 4},
    ],
)
def test_bad_fields_are_a_value_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="bad fields"):
        event_from_dict(data)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_the_type_is_the_class_s_not_a_constructor_argument(event: Event) -> None:
    field = {f.name: f for f in dataclasses.fields(event)}["type"]
    assert (field.init, field.default) == (False, event.type)
