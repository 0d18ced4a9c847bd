"""Message parts: built from a run's events in order, and their JSON form."""

from __future__ import annotations

import pytest

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
from tokenrelay.messages import (
    ErrorPart,
    FinishPart,
    MetadataPart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UsagePart,
    answer_parts,
    part_from_dict,
    part_to_dict,
    text_of,
)
from tokenrelay.runs.base import Transcript
from tokenrelay.stores.base import RunInfo

INFO = RunInfo("r", "ann", "c", "scripted", 0.0)


def parts_of(events: list[Event]) -> tuple[Part, ...]:
    """The parts a run's transcript builds from ``events`` (text noted through the run's hot path)."""
    transcript = Transcript()
    for event in events:
        if type(event) is TextDelta:
            transcript.texts.append(event.text)  # what the run's pump does for a text delta
        else:
            transcript.take(event)
    return transcript.outcome(INFO).parts


def test_an_answers_parts_keep_the_order_it_was_said_in() -> None:
    events: list[Event] = [
        ReasoningDelta("think"),
        ReasoningDelta("ing"),
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallStart("c1", "weather"),
        ToolCallArgsDelta("c1", '{"city":'),
        ToolCallArgsDelta("c1", '"Paris"}'),
        MetadataEvent({"queue_position": 2}),  # about the server at that moment: not kept
        MetadataEvent({"agent": "b", "previous_agent": "a"}),
        ToolCallResult("c1", "sunny"),
        TextDelta("It is "),
        TextDelta("sunny."),
        UsageEvent(3, 4),
        FinishEvent("stop"),
    ]
    assert parts_of(events) == (
        ReasoningPart("thinking"),
        TextPart("Let me check."),
        ToolCallPart("c1", "weather", '{"city":"Paris"}'),
        MetadataPart({"agent": "b", "previous_agent": "a"}),
        ToolResultPart("c1", "sunny"),
        TextPart("It is sunny."),
    )


def test_parts_from_the_hot_path_equal_parts_from_the_log() -> None:
    events: list[Event] = [
        TextDelta("a"),
        ToolCallArgsDelta("c9", "{}"),  # arguments for a call never announced: the call is kept, unnamed
        TextDelta("b"),
        ToolCallStart("c9", "late"),  # announced after: named, not duplicated
        ToolCallResult("c9", "boom", is_error=True),
        ErrorEvent("model_error", "broke"),
    ]
    expected = (TextPart("a"), ToolCallPart("c9", "late", "{}"), TextPart("b"), ToolResultPart("c9", "boom", True))
    assert parts_of(events) == expected
    assert Transcript.of_log(events).outcome(INFO).parts == expected
    assert text_of(expected) == "ab"


def test_an_answer_with_text_only_is_one_text_part() -> None:
    assert answer_parts(["Hel", "lo"]) == (TextPart("Hello"),)
    assert answer_parts([]) == ()


@pytest.mark.parametrize(
    "part",
    [
        TextPart("a\x00\ud800"),
        ReasoningPart("r"),
        ToolCallPart("c", "n", "{}"),
        ToolResultPart("c", "out", True),
        MetadataPart({"agent": "x", "nested": {"k": [1, 2]}}),
        UsagePart(1, None),
        FinishPart("length"),
        ErrorPart("rate_limited", "slow down", True),
    ],
)
def test_parts_round_trip_through_their_dicts(part: Part) -> None:
    as_dict = part_to_dict(part)
    assert next(iter(as_dict)) == "type"
    assert part_from_dict(as_dict) == part


def test_a_bad_part_dict_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown message part type"):
        part_from_dict({"type": "video"})
    with pytest.raises(ValueError, match="bad fields"):
        part_from_dict({"type": "text", "txt": "x"})
