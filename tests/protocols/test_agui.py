"""The AG-UI encoder, as a pure function of a run's events: every frame is parsed back with ``ag_ui.core``."""

from __future__ import annotations

from typing import Any

from ag_ui.core import EventType
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocols.helpers import AGENT_RUN, CTX, numbered
from tests.protocols.test_agui_reference import CONTENT, Frame, Reducer, Verifier, parse
from tokenrelay.coalescing import coalesce
from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    FinishReason,
    MetadataEvent,
    ReasoningDelta,
    RunPaused,
    StoredEvent,
    TextDelta,
    ToolApprovalRequest,
    ToolApprovalResponse,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.protocols import AGUIEncoder
from tokenrelay.protocols.agui import iso_time


def encode(events: list[Event], *, batch: bool = False) -> list[Frame]:
    encoder = AGUIEncoder(CTX)
    stored = numbered(events)
    opening = encoder.open()  # first, as a response writes it
    body = [encoder.encode(coalesce(stored))] if batch else [encoder.encode([item]) for item in stored]
    return parse(opening + b"".join(body))


def wire(frames: list[Frame]) -> list[dict[str, Any]]:
    return [f.event.model_dump(mode="json", by_alias=True) for f in frames]


def test_a_run_is_the_agui_event_stream() -> None:
    frames = encode(AGENT_RUN)
    Verifier().feed(frames)
    m = [f"run1-{n}" for n in range(5)]
    assert wire(frames) == [
        {"type": "RUN_STARTED", "threadId": "conv1", "runId": "run1", "protocolVersion": "1.0"},
        {"type": "CUSTOM", "name": "metadata", "value": {"queue_position": 0}},
        {"type": "REASONING_START", "messageId": m[1]},
        {"type": "REASONING_MESSAGE_START", "messageId": m[1], "role": "reasoning"},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": m[1], "delta": "Look"},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": m[1], "delta": " it up."},
        {"type": "REASONING_MESSAGE_END", "messageId": m[1]},
        {"type": "REASONING_END", "messageId": m[1]},
        {"type": "TEXT_MESSAGE_START", "messageId": m[2], "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": m[2], "delta": "Let me "},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": m[2], "delta": "check."},
        {"type": "TEXT_MESSAGE_END", "messageId": m[2]},
        # The call belongs to the assistant message that announced it.
        {"type": "TOOL_CALL_START", "toolCallId": "call_1", "toolCallName": "get_weather", "parentMessageId": m[2]},
        {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": '{"city": '},
        {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": '"Paris"}'},
        {"type": "TOOL_CALL_END", "toolCallId": "call_1"},
        {
            "type": "TOOL_CALL_RESULT",
            "messageId": m[3],
            "toolCallId": "call_1",
            "content": "sunny, 21C",
            "role": "tool",
        },
        # After the result, the model's words are its next message.
        {"type": "TEXT_MESSAGE_START", "messageId": m[4], "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": m[4], "delta": "It is "},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": m[4], "delta": "sunny."},
        {"type": "TEXT_MESSAGE_END", "messageId": m[4]},
        {
            "type": "RUN_FINISHED",
            "threadId": "conv1",
            "runId": "run1",
            "usage": [{"inputTokens": 12, "outputTokens": 7, "totalTokens": 19}],
            "metadata": {"finishReason": "stop"},
        },
    ]


def test_every_frame_has_an_id_and_an_events_last_frame_has_its_own() -> None:
    frames = encode([TextDelta("a"), ReasoningDelta("r"), TextDelta("b"), UsageEvent(1, 1), FinishEvent("stop")])
    # open: RUN_STARTED (0); 1: START + CONTENT; 2: END, REASONING_START, MESSAGE_START, CONTENT; 3: ...; 5: END, FINISHED
    assert [(f.id, f.type.value) for f in frames] == [
        (0, "RUN_STARTED"),
        (0, "TEXT_MESSAGE_START"),
        (1, "TEXT_MESSAGE_CONTENT"),
        (1, "TEXT_MESSAGE_END"),
        (1, "REASONING_START"),
        (1, "REASONING_MESSAGE_START"),
        (2, "REASONING_MESSAGE_CONTENT"),
        (2, "REASONING_MESSAGE_END"),
        (2, "REASONING_END"),
        (2, "TEXT_MESSAGE_START"),
        (3, "TEXT_MESSAGE_CONTENT"),
        (4, "TEXT_MESSAGE_END"),  # usage (4) has no frame of its own: the next frames say "after 4"
        (5, "RUN_FINISHED"),
    ]


def test_coalesced_deltas_make_the_same_messages() -> None:
    events: list[Event] = [TextDelta("a"), TextDelta("b"), TextDelta("c"), ToolCallStart("c1", "t")]
    events.append(ToolCallResult("c1", "x"))
    events += [TextDelta("d"), TextDelta("e"), FinishEvent("stop")]
    one_by_one, joined = encode(events), encode(events, batch=True)
    assert Reducer().feed(one_by_one) == Reducer().feed(joined)
    assert [f.id for f in joined if f.type == EventType.TEXT_MESSAGE_CONTENT] == [3, 7]


def test_a_failed_run_ends_with_run_error_carrying_the_code() -> None:
    frames = encode([TextDelta("Star"), ErrorEvent("rate_limited", "slow down", True, 2.5), FinishEvent("error")])
    Verifier().feed(frames)
    assert wire(frames)[-2:] == [
        {"type": "TEXT_MESSAGE_END", "messageId": "run1-1"},
        {
            "type": "RUN_ERROR",
            "message": "slow down",
            "code": "rate_limited",
            "metadata": {"retryable": True, "retryAfter": 2.5},
        },
    ]
    # RUN_ERROR is the run's last word: it carries the finish's id, so a resume after it has nothing to read.
    assert frames[-1].id == 3


def test_an_error_finish_without_an_error_event_is_still_run_error() -> None:
    assert wire(encode([FinishEvent("error")]))[-1]["type"] == "RUN_ERROR"


def test_a_cancelled_run_finishes_with_the_cancelled_outcome() -> None:
    frames = encode([TextDelta("par"), ToolCallStart("c", "t"), FinishEvent("cancelled", saved=False)])
    Verifier().feed(frames)
    assert wire(frames)[-3:] == [
        {"type": "TOOL_CALL_START", "toolCallId": "c", "toolCallName": "t", "parentMessageId": "run1-1"},
        {"type": "TOOL_CALL_END", "toolCallId": "c"},
        {
            "type": "RUN_FINISHED",
            "threadId": "conv1",
            "runId": "run1",
            "outcome": {"type": "cancelled"},
            "metadata": {"finishReason": "cancelled", "saved": False},
        },
    ]


def test_a_failed_tool_call_says_so_in_its_result() -> None:
    frames = encode([ToolCallStart("c", "t"), ToolCallResult("c", "boom", is_error=True), FinishEvent("stop")])
    result = next(f for f in frames if f.type == EventType.TOOL_CALL_RESULT)
    assert result.event.metadata == {"isError": True}
    assert result.event.content == "boom"


def test_nothing_is_written_after_the_end() -> None:
    encoder = AGUIEncoder(CTX)
    encoder.open()
    assert encoder.encode(numbered([TextDelta("a"), FinishEvent("stop")]))
    assert encoder.encode(numbered([TextDelta("late")], start=3)) == b""


def test_an_approval_is_an_interrupt_and_the_answer_a_new_run_of_the_stream() -> None:
    events: list[Event] = [
        TextDelta("I will delete it."),
        ToolApprovalRequest("call_9", "delete_file", '{"path": "/tmp/x"}'),
        RunPaused(1_800_000_000.0),
        ToolApprovalResponse("call_9", False, "not that one"),
        ToolCallResult("call_9", "The user denied this tool call. not that one", is_error=True),
        TextDelta("OK, I did not."),
        FinishEvent("stop"),
    ]
    frames = encode(events)
    Verifier().feed(frames)  # two runs in one stream: RUN_FINISHED (interrupt), then RUN_STARTED
    out = wire(frames)
    paused = next(f for f in out if f["type"] == "RUN_FINISHED")
    assert paused["outcome"] == {
        "type": "interrupt",
        "interrupts": [
            {
                "id": "call_9",
                "reason": "tool_approval",
                "message": 'Allow delete_file({"path": "/tmp/x"})?',
                "toolCallId": "call_9",
                "responseSchema": {
                    "type": "object",
                    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
                    "required": ["approved"],
                },
                "expiresAt": "2027-01-15T08:00:00.000Z",
                "metadata": {"toolName": "delete_file", "arguments": '{"path": "/tmp/x"}'},
            }
        ],
    }
    # The call was not streamed before its request: it is, whole, in the message that announced it.
    reduced = Reducer().feed(frames)
    assert reduced.calls == {"call_9": {"name": "delete_file", "arguments": '{"path": "/tmp/x"}', "parent": "run1-1"}}
    assert reduced.custom == [
        ("tool-approval-response", {"toolCallId": "call_9", "approved": False, "reason": "not that one"})
    ]
    assert reduced.results == [("call_9", "The user denied this tool call. not that one", True)]
    assert [m["content"] for m in reduced.messages.values()] == ["I will delete it.", "OK, I did not."]
    assert iso_time(0.5) == "1970-01-01T00:00:00.500Z"


def test_a_streamed_call_asked_for_approval_is_not_streamed_twice() -> None:
    events: list[Event] = [ToolCallStart("c", "t"), ToolCallArgsDelta("c", "{}"), ToolApprovalRequest("c", "t", "{}")]
    frames = encode([*events, RunPaused(1.0)])
    assert [f.type.value for f in frames] == [
        "RUN_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "RUN_FINISHED",
    ]


def test_a_resume_reopens_what_was_in_flight() -> None:
    stored = numbered(AGENT_RUN)
    # After event 4 ("Let me "): the text message is open.
    encoder = AGUIEncoder(CTX)
    encoder.prime(stored[:4])
    opening = encoder.open()
    frames = parse(opening + encoder.encode(stored[4:]))
    Verifier().feed(frames)
    out = wire(frames)
    assert out[:3] == [
        {"type": "RUN_STARTED", "threadId": "conv1", "runId": "run1", "protocolVersion": "1.0"},
        {"type": "TEXT_MESSAGE_START", "messageId": "run1-2", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "run1-2", "delta": "check."},
    ]
    assert frames[0].id == 4


def test_a_resume_in_a_tool_calls_arguments_starts_the_call_again_without_its_arguments() -> None:
    stored = numbered(AGENT_RUN)
    encoder = AGUIEncoder(CTX)
    encoder.prime(stored[:7])  # after the first fragment of the arguments
    opening = encoder.open()
    out = wire(parse(opening + encoder.encode(stored[7:])))
    assert out[1:3] == [
        {"type": "TOOL_CALL_START", "toolCallId": "call_1", "toolCallName": "get_weather", "parentMessageId": "run1-2"},
        {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": '"Paris"}'},
    ]


def test_a_part_that_ends_before_saying_more_is_not_reopened() -> None:
    stored = numbered([ReasoningDelta("hm"), TextDelta("x"), FinishEvent("stop")])
    encoder = AGUIEncoder(CTX)
    encoder.prime(stored[:1])
    opening = encoder.open()
    frames = parse(opening + encoder.encode(stored[1:]))
    Verifier().feed(frames)
    assert EventType.REASONING_END not in [f.type for f in frames]


def test_a_resume_after_the_end_writes_nothing() -> None:
    stored = numbered([TextDelta("x"), FinishEvent("stop")])
    encoder = AGUIEncoder(CTX)
    encoder.prime(stored)
    assert encoder.open() == b""


# Random runs: what a backend may say, in any order it may say it.
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=4)


@st.composite
def runs(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    steps = draw(st.lists(st.sampled_from(["text", "reason", "call", "parallel", "meta", "usage", "approve"])))
    for n, step in enumerate(steps):
        call = f"call_{n}"
        if step == "text":
            events.append(TextDelta(draw(_TEXT)))
        elif step == "reason":
            events.append(ReasoningDelta(draw(_TEXT)))
        elif step == "call":
            events.append(ToolCallStart(call, "tool"))
            events += [ToolCallArgsDelta(call, draw(_TEXT)) for _ in range(draw(st.integers(0, 2)))]
            if draw(st.booleans()):
                events.append(ToolCallResult(call, draw(_TEXT), is_error=draw(st.booleans())))
        elif step == "parallel":
            a, b = f"{call}a", f"{call}b"
            events += [
                ToolCallStart(a, "x"),
                ToolCallStart(b, "y"),
                ToolCallArgsDelta(a, "1"),
                ToolCallArgsDelta(b, "2"),
            ]
            events += [ToolCallResult(a, "ra"), ToolCallResult(b, "rb")]
        elif step == "meta":
            events.append(MetadataEvent({"agent": draw(_TEXT)}))
        elif step == "usage":
            events.append(UsageEvent(draw(st.none() | st.integers(0, 9)), draw(st.none() | st.integers(0, 9))))
        else:
            if draw(st.booleans()):
                events.append(ToolCallStart(call, "danger"))
            events += [ToolApprovalRequest(call, "danger", "{}"), RunPaused(2e9)]
            approved = draw(st.booleans())
            events += [ToolApprovalResponse(call, approved), ToolCallResult(call, "done", is_error=not approved)]
    if draw(st.booleans()):
        events.append(ErrorEvent("model_error", "broke"))
    reason: FinishReason = draw(st.sampled_from(["stop", "length", "cancelled", "error", "tool_calls"]))
    return [*events, FinishEvent(reason)]


@settings(max_examples=60, deadline=None)
@given(runs(), st.data())
def test_every_random_run_is_a_valid_agui_stream_however_batched(events: list[Event], data: st.DataObject) -> None:
    stored = numbered(events)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stored)), max_size=4)))
    encoder = AGUIEncoder(CTX)
    body = encoder.open()
    for start, end in zip([0, *cuts], [*cuts, len(stored)], strict=True):
        body += encoder.encode(coalesce(stored[start:end]))
    frames = parse(body)
    Verifier().feed(frames)
    assert Reducer().feed(frames) == Reducer().feed(encode(events))
    ids = [f.id for f in frames]
    assert ids == sorted(ids)
    assert ids[-1] == len(stored)


def resumed(stored: list[StoredEvent], after: int) -> list[Frame]:
    """What a client reading from ``after`` gets (the route primes the encoder only for a cursor past 0)."""
    encoder = AGUIEncoder(CTX)
    if after > 0:
        encoder.prime(stored[:after])
    opening = encoder.open()
    return parse(opening + encoder.encode(stored[after:]))


@settings(max_examples=40, deadline=None)
@given(runs())
def test_a_resume_at_every_cut_loses_and_repeats_nothing(events: list[Event]) -> None:
    stored = numbered(events)
    whole = resumed(stored, 0)
    expected = Reducer().feed(whole)
    for cut in range(1, len(whole)):
        # The connection dropped after ``cut`` frames: the client resumes from the last id it has.
        received, after = whole[:cut], whole[cut - 1].id
        rest = resumed(stored, after)
        Verifier().feed(rest)  # a resumed response is a run of its own to the client
        assert all(f.id > after for f in rest if f.type in CONTENT), f"repeated after {after}"
        if after == len(stored):
            continue
        assert Reducer().feed(received + rest) == expected, f"cut after frame {cut} (id {after})"
