"""The AI SDK encoder, as a pure function of a run's events."""

from __future__ import annotations

import pytest

from tests.protocols.helpers import AGENT_RUN, CTX, chunks, frames, numbered
from tokenrelay.coalescing import coalesce
from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
)
from tokenrelay.protocols import AISDKEncoder


def aisdk(events: list[Event], *, batch: bool = False) -> bytes:
    encoder = AISDKEncoder(CTX)
    stored = numbered(events)
    body = [encoder.encode(coalesce(stored))] if batch else [encoder.encode([item]) for item in stored]
    return encoder.open() + b"".join(body)


def test_aisdk_run_is_the_ui_message_stream_useChat_reads() -> None:
    out = chunks(aisdk(AGENT_RUN))
    assert out[0] == {
        "type": "start",
        "messageId": "run1",
        "messageMetadata": {"runId": "run1", "conversationId": "conv1"},
    }
    assert out[1:] == [
        {"type": "start-step"},
        {"type": "data-metadata", "data": {"queue_position": 0}, "transient": True},
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Look"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": " it up."},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "Let me "},
        {"type": "text-delta", "id": "text-2", "delta": "check."},
        {"type": "text-end", "id": "text-2"},
        {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "get_weather", "providerExecuted": True},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"city": '},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '"Paris"}'},
        {
            "type": "tool-input-available",
            "toolCallId": "call_1",
            "toolName": "get_weather",
            "input": {"city": "Paris"},
            "providerExecuted": True,
        },
        {"type": "tool-output-available", "toolCallId": "call_1", "output": "sunny, 21C", "providerExecuted": True},
        {"type": "finish-step"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-3"},
        {"type": "text-delta", "id": "text-3", "delta": "It is "},
        {"type": "text-delta", "id": "text-3", "delta": "sunny."},
        {"type": "text-end", "id": "text-3"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {"usage": {"inputTokens": 12, "outputTokens": 7}},
        },
        "[DONE]",
    ]


def test_aisdk_last_frame_of_each_event_carries_its_sequence_id() -> None:
    sse = frames(aisdk([TextDelta("a"), TextDelta("b"), FinishEvent("stop")]))
    # open: start, start-step (no id yet); 1: text-start + text-delta; 2: text-delta; 3: text-end ... [DONE]
    raw = aisdk([TextDelta("a"), TextDelta("b"), FinishEvent("stop")])
    assert b'data: {"type":"text-start","id":"text-1"}\n\nid: 1\ndata: {"type":"text-delta"' in raw
    assert raw.endswith(b"id: 3\ndata: [DONE]\n\n")
    assert [f.id for f in sse][-1] == "3"


def test_aisdk_part_ids_do_not_depend_on_coalescing() -> None:
    one_by_one = chunks(aisdk(AGENT_RUN))
    coalesced = chunks(aisdk(AGENT_RUN, batch=True))
    ids = [c["id"] for c in one_by_one if isinstance(c, dict) and c["type"].endswith("-start") and "id" in c]
    assert ids == [c["id"] for c in coalesced if isinstance(c, dict) and c["type"].endswith("-start") and "id" in c]
    text = [c["delta"] for c in coalesced if isinstance(c, dict) and c["type"] == "text-delta"]
    assert text == ["Let me check.", "It is sunny."]


def blocks(data: bytes) -> list[tuple[int | None, bytes]]:
    """Each frame with the id written on it (``None`` when it has no ``id:`` line of its own)."""
    out: list[tuple[int | None, bytes]] = []
    for block in data.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        ids = [int(line[4:]) for line in lines if line.startswith(b"id: ")]
        out.append((ids[0] if ids else None, lines[-1]))
    return out


@pytest.mark.parametrize("after", range(1, len(AGENT_RUN)))
def test_aisdk_resume_after_any_event_continues_exactly(after: int) -> None:
    full = blocks(aisdk(AGENT_RUN))
    # A client that resumes after ``after`` had every frame up to the last one carrying an id <= after.
    seen = max(i for i, (seq, _) in enumerate(full) if seq is not None and seq <= after)
    encoder = AISDKEncoder(CTX)
    stored = numbered(AGENT_RUN)
    encoder.prime(stored[:after])
    resumed = encoder.open() + b"".join(encoder.encode([item]) for item in stored[after:])
    assert blocks(resumed) == full[seen + 1 :]


def test_aisdk_error_then_finish_reports_the_error_and_ends() -> None:
    out = chunks(aisdk([TextDelta("Hm"), ErrorEvent("model_error", "it broke"), FinishEvent("error")]))
    assert {"type": "error", "errorText": "it broke"} in out
    assert out[-3:] == [{"type": "finish-step"}, {"type": "finish", "finishReason": "error"}, "[DONE]"]


def test_aisdk_cancelled_run_ends_with_abort() -> None:
    out = chunks(aisdk([TextDelta("Hel"), FinishEvent("cancelled")]))
    assert out[-3:] == [{"type": "text-end", "id": "text-1"}, {"type": "abort", "reason": "cancelled"}, "[DONE]"]
    assert not any(isinstance(c, dict) and c["type"] == "finish" for c in out)


def test_aisdk_tool_error_and_bad_arguments() -> None:
    events: list[Event] = [
        ToolCallStart("c1", "search"),
        ToolCallArgsDelta("c1", "{not json"),
        ToolCallResult("c1", "search is down", is_error=True),
        ToolCallStart("c2", "clock"),
        FinishEvent("tool_calls"),
    ]
    out = [c for c in chunks(aisdk(events)) if isinstance(c, dict)]
    bad_input = next(c for c in out if c["type"] == "tool-input-error")
    assert bad_input["input"] == "{not json"
    assert bad_input["toolName"] == "search"
    assert {
        "type": "tool-output-error",
        "toolCallId": "c1",
        "errorText": "search is down",
        "providerExecuted": True,
    } in out
    # A call without arguments has the empty object as input once the run moves on.
    clock = next(c for c in out if c["type"] == "tool-input-available")
    assert clock["toolCallId"] == "c2"
    assert clock["input"] == {}
    assert out[-1] == {"type": "finish", "finishReason": "tool-calls"}


def test_aisdk_frames_survive_text_orjson_refuses() -> None:
    out = chunks(aisdk([TextDelta("a\ud800b"), FinishEvent("stop")]))
    assert out[3] == {"type": "text-delta", "id": "text-1", "delta": "a\ud800b"}
