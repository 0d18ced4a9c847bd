"""A reference reader of AG-UI streams, for the AG-UI tests: each frame parsed by the protocol's own models
(``ag_ui.core``), the event-order rules ``@ag-ui/client`` verifies, and the messages its reducer builds.

The tests here check the reader itself: that it refuses what ``@ag-ui/client`` refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from ag_ui.core import Event as AGUIEvent
from ag_ui.core import EventType
from pydantic import BaseModel, TypeAdapter

from tokenrelay.sse import ServerSentEvent, SSEDecoder

EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)

# Frames that carry what the run said (the rest only open and close things): a resume must never repeat them.
CONTENT = {
    EventType.TEXT_MESSAGE_CONTENT,
    EventType.REASONING_MESSAGE_CONTENT,
    EventType.TOOL_CALL_ARGS,
    EventType.TOOL_CALL_RESULT,
    EventType.CUSTOM,
    EventType.RUN_FINISHED,
    EventType.RUN_ERROR,
}


def no_unknown_fields(model: Any, path: str = "event") -> None:
    """The models keep unknown fields (``extra="allow"``): refuse them, as the TypeScript client strips them."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{path}: unknown fields {sorted(model.model_extra)}"
        for name in type(model).model_fields:
            no_unknown_fields(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            no_unknown_fields(item, f"{path}[{i}]")


@dataclass(frozen=True)
class Frame:
    id: int
    event: Any  # an ag_ui.core event model

    @property
    def type(self) -> EventType:
        return EventType(self.event.type)


def parse(data: bytes) -> list[Frame]:
    """Every frame of ``data``: it must have an ``id:`` and be one valid AG-UI event, with no unknown field."""
    out: list[Frame] = []
    for item in SSEDecoder().feed(data):
        if not isinstance(item, ServerSentEvent):
            continue
        assert item.id.isdigit(), f"a frame without its id: {item.data}"
        event = EVENTS.validate_json(item.data)
        no_unknown_fields(event)
        out.append(Frame(int(item.id), event))
    return out


class Verifier:
    """The order rules of ``@ag-ui/client``'s verifier (verify/verify.ts), for the events tokenrelay sends."""

    def __init__(self) -> None:
        self.first = True
        self.started = self.finished = self.errored = False
        self.text: set[str] = set()
        self.reasoning: set[str] = set()
        self.spans: set[str] = set()
        self.calls: set[str] = set()

    def feed(self, frames: list[Frame]) -> None:
        for frame in frames:
            self.check(frame.type, frame.event)

    def check(self, kind: EventType, event: Any) -> None:
        assert not self.errored, f"{kind} after RUN_ERROR"
        if self.first:
            assert kind in (EventType.RUN_STARTED, EventType.RUN_ERROR), f"first event {kind}"
            self.first = False
        if kind == EventType.RUN_STARTED:
            assert not self.started or self.finished, "RUN_STARTED while a run is active"
            self.started, self.finished = True, False
            self.text, self.reasoning, self.spans, self.calls = set(), set(), set(), set()
            return
        assert not self.finished, f"{kind} after RUN_FINISHED"
        self._bracket(kind, event)

    def _bracket(self, kind: EventType, event: Any) -> None:
        opens = {
            EventType.TEXT_MESSAGE_START: self.text,
            EventType.REASONING_MESSAGE_START: self.reasoning,
            EventType.REASONING_START: self.spans,
            EventType.TOOL_CALL_START: self.calls,
        }
        continues = {
            EventType.TEXT_MESSAGE_CONTENT: self.text,
            EventType.REASONING_MESSAGE_CONTENT: self.reasoning,
            EventType.TOOL_CALL_ARGS: self.calls,
        }
        closes = {
            EventType.TEXT_MESSAGE_END: self.text,
            EventType.REASONING_MESSAGE_END: self.reasoning,
            EventType.REASONING_END: self.spans,
            EventType.TOOL_CALL_END: self.calls,
        }
        key: str = event.tool_call_id if kind in _CALL_KINDS else getattr(event, "message_id", "")
        if kind in opens:
            assert key not in opens[kind], f"{kind} {key}: already open"
            opens[kind].add(key)
        elif kind in continues:
            assert key in continues[kind], f"{kind} {key}: not open"
        elif kind in closes:
            assert key in closes[kind], f"{kind} {key}: not open"
            closes[kind].discard(key)
        elif kind == EventType.RUN_FINISHED:
            open_ = [*self.text, *self.reasoning, *self.spans, *self.calls]
            assert not open_, f"RUN_FINISHED while {open_} are open"
            self.finished = True
        elif kind == EventType.RUN_ERROR:
            self.errored = True


_CALL_KINDS = (EventType.TOOL_CALL_START, EventType.TOOL_CALL_ARGS, EventType.TOOL_CALL_END)


@dataclass
class Reducer:
    """What ``@ag-ui/client``'s reducer (apply/default.ts) makes of the events: messages, tool calls, results.

    Starting a message or a tool call that it already holds continues it, as there."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[tuple[str, str, bool]] = field(default_factory=list)
    custom: list[tuple[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, frames: list[Frame]) -> Reducer:
        for frame in frames:
            self.apply(frame.type, frame.event)
        return self

    def apply(self, kind: EventType, event: Any) -> None:
        if kind in (EventType.TEXT_MESSAGE_START, EventType.REASONING_MESSAGE_START):
            role = "assistant" if kind == EventType.TEXT_MESSAGE_START else "reasoning"
            self.messages.setdefault(event.message_id, {"role": role, "content": ""})
        elif kind in (EventType.TEXT_MESSAGE_CONTENT, EventType.REASONING_MESSAGE_CONTENT):
            self.messages[event.message_id]["content"] += event.delta
        elif kind == EventType.TOOL_CALL_START:
            call = {"name": event.tool_call_name, "arguments": "", "parent": event.parent_message_id}
            self.calls.setdefault(event.tool_call_id, call)
        elif kind == EventType.TOOL_CALL_ARGS:
            self.calls[event.tool_call_id]["arguments"] += event.delta
        elif kind == EventType.TOOL_CALL_RESULT:
            error = bool((event.metadata or {}).get("isError"))
            self.results.append((event.tool_call_id, event.content, error))
        elif kind == EventType.CUSTOM:
            self.custom.append((event.name, event.value))
        elif kind in (EventType.RUN_FINISHED, EventType.RUN_ERROR):
            self.ends.append(event.model_dump(mode="json", by_alias=True))


def frame_bytes(*events: dict[str, Any], first_id: int = 1) -> bytes:
    import json

    return b"".join(b"id: %d\ndata: %s\n\n" % (first_id + i, json.dumps(e).encode()) for i, e in enumerate(events))


STARTED = {"type": "RUN_STARTED", "threadId": "t", "runId": "r"}


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "TEXT_MESSAGE_START", "messageId": "m"}],  # not opened by RUN_STARTED
        [STARTED, {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}],
        [STARTED, {"type": "TEXT_MESSAGE_START", "messageId": "m"}, {"type": "TEXT_MESSAGE_START", "messageId": "m"}],
        [STARTED, {"type": "TOOL_CALL_ARGS", "toolCallId": "c", "delta": "{}"}],
        [STARTED, {"type": "REASONING_MESSAGE_END", "messageId": "r"}],
        [
            STARTED,
            {"type": "TEXT_MESSAGE_START", "messageId": "m"},
            {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"},
        ],
        [STARTED, {"type": "RUN_ERROR", "message": "x"}, {"type": "CUSTOM", "name": "n", "value": 1}],
        [STARTED, STARTED],
    ],
)
def test_the_verifier_refuses_what_the_client_refuses(events: list[dict[str, Any]]) -> None:
    with pytest.raises(AssertionError):
        Verifier().feed(parse(frame_bytes(*events)))


@pytest.mark.parametrize(
    "data",
    [
        b'data: {"type":"RUN_STARTED","threadId":"t","runId":"r"}\n\n',  # no id
        b'id: 1\ndata: {"type":"RUN_STARTED","threadId":"t"}\n\n',  # runId is required
        b'id: 1\ndata: {"type":"RUN_STARTED","threadId":"t","runId":"r","extra":1}\n\n',
        b'id: 1\ndata: {"type":"THINKING_START"}\n\n',  # left the protocol in 1.0
    ],
)
def test_frames_must_have_an_id_and_be_exactly_an_agui_event(data: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - an AssertionError or pydantic's ValidationError
        parse(data)


def test_the_reducer_continues_a_message_started_again() -> None:
    events = [
        STARTED,
        {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "Hel"},
        STARTED,
        {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "lo"},
    ]
    assert Reducer().feed(parse(frame_bytes(*events))).messages == {"m": {"role": "assistant", "content": "Hello"}}
