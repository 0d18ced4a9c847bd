"""The AI SDK encoder, as a pure function of a run's events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocols.helpers import AGENT_RUN, CTX, chunks, frames, numbered
from tokenrelay.coalescing import coalesce
from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    ReasoningDelta,
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


class StreamError(AssertionError):
    """What the ``ai`` package throws for a chunk that names a part its stream has not started."""


class UIReader:
    """The message a UI message stream builds, by the rules of the ``ai`` package's ``processUIMessageStream``.

    Each :meth:`read` is one stream: open text and reasoning parts and streaming tool inputs are its own, while the
    message (its parts) carries over, as when useChat continues the message it holds.
    """

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def read(self, stream: list[Any]) -> UIReader:
        active: dict[str, dict[str, Any]] = {}  # text and reasoning parts, by id
        inputs: dict[str, str] = {}
        for chunk in stream:
            if chunk == "[DONE]":
                continue
            kind = chunk["type"]
            if kind in ("text-start", "reasoning-start"):
                active[chunk["id"]] = {"type": kind.split("-")[0], "text": "", "state": "streaming"}
                self.parts.append(active[chunk["id"]])
            elif kind in ("text-delta", "reasoning-delta", "text-end", "reasoning-end"):
                part = active.get(chunk["id"])
                if part is None or part["type"] != kind.split("-")[0]:
                    raise StreamError(f"Received {kind} for missing part with ID {chunk['id']!r}")
                if kind.endswith("-delta"):
                    part["text"] += chunk["delta"]
                else:
                    part["state"] = "done"
                    del active[chunk["id"]]
            elif kind == "start-step":
                self.parts.append({"type": "step-start"})
            elif kind == "finish-step":
                active.clear()
            elif kind.startswith("tool-"):
                self._tool(chunk, inputs)
        return self

    def _tool(self, chunk: dict[str, Any], inputs: dict[str, str]) -> None:
        kind, call_id = chunk["type"], chunk["toolCallId"]
        part = next((p for p in self.parts if p.get("toolCallId") == call_id), None)
        if kind == "tool-input-delta":
            if call_id not in inputs:
                raise StreamError(f"Received tool-input-delta for missing tool call with ID {call_id!r}")
            inputs[call_id] += chunk["inputTextDelta"]
            assert part is not None
            part["raw"] = inputs[call_id]
            return
        if kind in ("tool-output-available", "tool-output-error"):
            if part is None:
                raise StreamError(f"No tool invocation found for tool call ID {call_id!r}")
            part["state"] = "output-error" if kind == "tool-output-error" else "output-available"
            part["output"] = chunk.get("output", chunk.get("errorText"))
            return
        if part is None:
            part = {"type": f"tool-{chunk['toolName']}", "toolCallId": call_id}
            self.parts.append(part)
        if kind == "tool-input-start":
            inputs[call_id] = ""
            part.update(state="input-streaming", input=None, raw="")
        else:
            part.update(state="input-available" if kind == "tool-input-available" else "output-error")
            part["input"] = chunk["input"]

    def text(self, kind: str = "text") -> str:
        return "".join(p["text"] for p in self.parts if p["type"] == kind)

    def tools(self) -> dict[str, tuple[Any, ...]]:
        return {
            p["toolCallId"]: (p["type"], p["state"], p["input"], p.get("output"))
            for p in self.parts
            if "toolCallId" in p
        }


STREAMING_ARGS: list[Event] = [
    TextDelta("Two "),
    ReasoningDelta("Both "),
    ReasoningDelta("cities."),
    ToolCallStart("a", "get_weather"),
    ToolCallArgsDelta("a", '{"ci'),
    ToolCallArgsDelta("a", 'ty": "Par'),
    ToolCallArgsDelta("a", 'is"}'),
    ToolCallStart("b", "get_weather"),
    ToolCallArgsDelta("b", "{not json"),
    TextDelta("Checking."),
    ToolCallResult("a", "sunny"),
    ToolCallResult("b", "no such city", is_error=True),
    TextDelta("Paris is "),
    TextDelta("sunny."),
    FinishEvent("stop"),
]
CANCELLED_MID_PART: list[Event] = [
    ReasoningDelta("Hm"),
    ReasoningDelta("m."),
    TextDelta("Hel"),
    TextDelta("lo"),
    FinishEvent("cancelled"),
]
RUNS = {"agent": AGENT_RUN, "streaming-args": STREAMING_ARGS, "cancelled": CANCELLED_MID_PART}
RESUME_POINTS = [(name, after) for name, run in RUNS.items() for after in range(1, len(run))]


def resumed_after(run: list[Event], after: int, *, batch: bool = False) -> bytes:
    encoder = AISDKEncoder(CTX)
    stored = numbered(run)
    encoder.prime(stored[:after])
    rest = stored[after:]
    body = [encoder.encode(coalesce(rest))] if batch else [encoder.encode([item]) for item in rest]
    return encoder.open() + b"".join(body)


def seen_through(run: list[Event], after: int) -> list[Any]:
    """What a client that last saw id ``after`` holds: every frame up to the last one carrying an id <= after."""
    raw = aisdk(run)
    full = blocks(raw)
    seen = max(i for i, (seq, _) in enumerate(full) if seq is not None and seq <= after)
    return chunks(raw)[: seen + 1]


@pytest.mark.parametrize(("name", "after"), RESUME_POINTS)
def test_aisdk_resume_after_any_event_is_accepted_and_completes_the_message(name: str, after: int) -> None:
    run = RUNS[name]
    whole = UIReader().read(chunks(aisdk(run)))
    for batch in (False, True):
        resumed = resumed_after(run, after, batch=batch)
        assert all(seq is None or seq > after for seq, _ in blocks(resumed))
        assert chunks(resumed)[-1] == "[DONE]"
        # The client that holds the message so far, reading the rest as a new stream (useChat's resume).
        continued = UIReader().read(seen_through(run, after))
        held = len(continued.parts)
        continued.read(chunks(resumed))
        assert continued.text() == whole.text()
        assert continued.text("reasoning") == whole.text("reasoning")
        assert continued.tools() == whole.tools()
        # Every part the resumed stream opened, it closed (a fragment held from before stays as the client had it).
        assert all(p["state"] == "done" for p in continued.parts[held:] if p["type"] in ("text", "reasoning"))
        # A reader that kept nothing (a fresh page given the id) is not refused either.
        UIReader().read(chunks(resumed))


def test_aisdk_resume_inside_a_text_part_reopens_it_before_its_next_delta() -> None:
    # After event 4 ("Let me "): the client holds text-2 open; its reader on the new stream does not.
    out = chunks(resumed_after(AGENT_RUN, 4))
    assert out[:3] == [
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "check."},
        {"type": "text-end", "id": "text-2"},
    ]
    # The whole run: re-opened once, never a second start, never an opening frame again.
    assert [c["type"] for c in out if isinstance(c, dict)].count("text-start") == 2
    assert not any(isinstance(c, dict) and c["type"] in ("start", "abort") for c in out)


def test_aisdk_resume_inside_tool_arguments_restarts_the_input_with_what_came_so_far() -> None:
    out = chunks(resumed_after(STREAMING_ARGS, 5))  # after '{"ci'
    assert out[:3] == [
        {"type": "tool-input-start", "toolCallId": "a", "toolName": "get_weather", "providerExecuted": True},
        {"type": "tool-input-delta", "toolCallId": "a", "inputTextDelta": '{"ci'},
        {"type": "tool-input-delta", "toolCallId": "a", "inputTextDelta": 'ty": "Par'},
    ]


def test_aisdk_resume_while_a_tool_runs_repeats_its_settled_input_before_the_result() -> None:
    out = [c for c in chunks(resumed_after(AGENT_RUN, 8)) if isinstance(c, dict)]  # input complete, no result yet
    assert [c["type"] for c in out[:2]] == ["tool-input-available", "tool-output-available"]
    assert out[0]["input"] == {"city": "Paris"}


def test_aisdk_resume_where_a_part_ends_unseen_sends_no_end_for_it() -> None:
    # After the reasoning's last delta, the next event closes it: an end would name a part the reader never had.
    out = chunks(resumed_after(AGENT_RUN, 3))
    assert {"type": "reasoning-end", "id": "reasoning-1"} not in out
    assert out[0] == {"type": "text-start", "id": "text-2"}


def test_aisdk_a_real_gap_is_still_refused_by_the_reader() -> None:
    # The check above can fail: a stream that skips the re-opening is what the SDK throws on.
    with pytest.raises(StreamError, match="missing part"):
        UIReader().read([{"type": "text-delta", "id": "text-1", "delta": "x"}])


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
