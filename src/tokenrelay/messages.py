"""A conversation's messages as backends receive them: the vocabulary shared by history, runs and backends.

A :class:`Message` is a role, its text (``content``) and, for an answer, the ``parts`` it was made of, in the order
the model produced them: text, reasoning, tool calls and their results, metadata, and how the answer ended (usage,
finish reason, error). ``content`` is always the text alone (the text parts joined), so whatever only needs the
text never looks at the parts; a message without parts (a question, an answer stored before parts were) is its
text.

Parts are built from a run's events by :func:`answer_parts`; :func:`part_to_dict` / :func:`part_from_dict` are
their JSON form (the history's storage and the conversations API).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from tokenrelay.events import (
    Event,
    FinishReason,
    MetadataEvent,
    ReasoningDelta,
    TextDelta,
    ToolApprovalRequest,
    ToolApprovalResponse,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
)

__all__ = [
    "TRANSIENT_METADATA",
    "ErrorPart",
    "FinishPart",
    "Message",
    "MetadataPart",
    "Part",
    "PausedPart",
    "ReasoningPart",
    "Role",
    "TextPart",
    "ToolApprovalPart",
    "ToolCallPart",
    "ToolResultPart",
    "UsagePart",
    "answer_parts",
    "part_from_dict",
    "part_to_dict",
    "text_of",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextPart:
    """A stretch of the answer's text."""

    text: str
    type: Literal["text"] = field(default="text", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ReasoningPart:
    """A stretch of the model's reasoning, shown apart from the answer and never sent back to a model."""

    text: str
    type: Literal["reasoning"] = field(default="reasoning", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """The model called tool ``name`` with ``arguments`` (JSON text, as the model wrote it: possibly cut short)."""

    call_id: str
    name: str
    arguments: str = ""
    type: Literal["tool-call"] = field(default="tool-call", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """What the tool called as ``call_id`` returned, or the error it raised (``is_error``)."""

    call_id: str
    output: str
    is_error: bool = False
    type: Literal["tool-result"] = field(default="tool-result", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class MetadataPart:
    """Out-of-band facts the backend reported (an agent handoff, ...)."""

    data: Mapping[str, Any]
    type: Literal["metadata"] = field(default="metadata", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class UsagePart:
    """Token counts for the answer, as the backend reported them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    type: Literal["usage"] = field(default="usage", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class FinishPart:
    """How the answer ended."""

    reason: FinishReason
    type: Literal["finish"] = field(default="finish", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ErrorPart:
    """The error the answer ended with."""

    code: str
    message: str
    retryable: bool = False
    type: Literal["error"] = field(default="error", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolApprovalPart:
    """The model asked to call tool ``name`` with ``arguments``, a call that needs a person's approval; ``approved``
    is the answer (``None`` while it waits) and ``reason`` the one given with it."""

    call_id: str
    name: str
    arguments: str = ""
    approved: bool | None = None
    reason: str | None = None
    type: Literal["tool-approval"] = field(default="tool-approval", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class PausedPart:
    """The answer so far of a run that waits for approvals, and what it goes on from: ``state`` (the backend's
    opaque resumable state), the ``backend`` that wrote it, ``expires_at`` (unix seconds) and ``seq``, the id of the
    run's pause event. Last in its message; never sent to a model."""

    state: str
    backend: str
    expires_at: float
    seq: int = 0
    type: Literal["paused"] = field(default="paused", init=False, repr=False)


Part = (
    TextPart
    | ReasoningPart
    | ToolCallPart
    | ToolResultPart
    | MetadataPart
    | UsagePart
    | FinishPart
    | ErrorPart
    | ToolApprovalPart
    | PausedPart
)


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation: who said it, its text, and (for an answer) the parts it was made of."""

    role: Role
    content: str
    parts: tuple[Part, ...] = ()


TRANSIENT_METADATA: Final[frozenset[str]] = frozenset({"queue_position"})
"""Metadata about the server at that moment, not about the conversation: not kept in an answer's parts."""

_BY_TYPE: Final[Mapping[str, type[Part]]] = {
    "text": TextPart,
    "reasoning": ReasoningPart,
    "tool-call": ToolCallPart,
    "tool-result": ToolResultPart,
    "metadata": MetadataPart,
    "usage": UsagePart,
    "finish": FinishPart,
    "error": ErrorPart,
    "tool-approval": ToolApprovalPart,
    "paused": PausedPart,
}


_FIELDS: dict[type, tuple[str, ...]] = {}


def part_to_dict(part: Part) -> dict[str, Any]:
    """A JSON-ready dict with the ``type`` discriminator first."""
    names = _FIELDS.get(type(part))
    if names is None:  # each part's fields are plain values (``dataclasses.asdict`` would copy each, deeply)
        names = _FIELDS[type(part)] = tuple(f.name for f in fields(part) if f.name != "type")
    out: dict[str, Any] = {"type": part.type}
    for name in names:
        out[name] = getattr(part, name)
    if isinstance(part, MetadataPart):
        out["data"] = dict(part.data)
    return out


def part_from_dict(data: Mapping[str, Any]) -> Part:
    """The inverse of :func:`part_to_dict`; ``ValueError`` on an unknown type or bad fields."""
    fields = dict(data)
    kind = fields.pop("type", None)
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown message part type {kind!r}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad fields for message part {kind!r}: {exc}") from None


def text_of(parts: Iterable[Part]) -> str:
    """The text of ``parts``: what a message's ``content`` is."""
    return "".join(p.text for p in parts if isinstance(p, TextPart))


class _Builder:
    """Parts in the making: runs of text and reasoning are joined, a call's argument fragments gathered."""

    def __init__(self) -> None:
        self.items: list[Part | list[str]] = []  # a list: the pieces of a text or reasoning run
        self.kinds: list[type[Part]] = []
        self.args: dict[str, list[str]] = {}
        self.calls: dict[str, int] = {}  # call id -> index in items
        self.approvals: dict[str, int] = {}  # call id -> index of its approval part in items

    def run(self, kind: type[TextPart | ReasoningPart], text: str) -> None:
        if not text:
            return
        if self.kinds and self.kinds[-1] is kind:
            pieces = self.items[-1]
            assert isinstance(pieces, list)
            pieces.append(text)
        else:
            self.add(kind, [text])

    def add(self, kind: type[Part], item: Part | list[str]) -> None:
        self.items.append(item)
        self.kinds.append(kind)

    def event(self, event: Event) -> None:
        if isinstance(event, ReasoningDelta):
            self.run(ReasoningPart, event.text)
        elif isinstance(event, ToolCallStart):
            self.call(event.call_id, event.name)
        elif isinstance(event, ToolCallArgsDelta):
            if event.call_id not in self.calls:
                self.call(event.call_id, "")
            self.args[event.call_id].append(event.delta)
        elif isinstance(event, ToolCallResult):
            self.add(ToolResultPart, ToolResultPart(event.call_id, event.output, event.is_error))
        elif isinstance(event, MetadataEvent):
            kept = {k: v for k, v in event.data.items() if k not in TRANSIENT_METADATA}
            if kept:
                self.add(MetadataPart, MetadataPart(kept))
        elif isinstance(event, ToolApprovalRequest):
            self.approvals[event.call_id] = len(self.items)
            self.add(ToolApprovalPart, ToolApprovalPart(event.call_id, event.name, event.arguments))
        elif isinstance(event, ToolApprovalResponse) and event.call_id in self.approvals:
            index = self.approvals[event.call_id]
            asked = self.items[index]
            if isinstance(asked, ToolApprovalPart):
                self.items[index] = ToolApprovalPart(
                    asked.call_id, asked.name, asked.arguments, event.approved, event.reason
                )
        # Usage, errors and the finish are how the answer ended: the outcome carries them, not the parts' order.

    def call(self, call_id: str, name: str) -> None:
        if call_id in self.calls:  # announced twice (a provider repeating itself): keep the first, named
            index = self.calls[call_id]
            earlier = self.items[index]
            if isinstance(earlier, ToolCallPart) and not earlier.name and name:
                self.items[index] = ToolCallPart(call_id, name)
            return
        self.calls[call_id] = len(self.items)
        self.args[call_id] = []
        self.add(ToolCallPart, ToolCallPart(call_id, name))

    def build(self) -> tuple[Part, ...]:
        out: list[Part] = []
        for kind, item in zip(self.kinds, self.items, strict=True):
            if isinstance(item, list):
                out.append(TextPart("".join(item)) if kind is TextPart else ReasoningPart("".join(item)))
            elif isinstance(item, ToolCallPart):
                out.append(ToolCallPart(item.call_id, item.name, "".join(self.args[item.call_id])))
            else:
                out.append(item)
        return tuple(out)


def answer_parts(texts: Sequence[str], marks: Sequence[tuple[int, Event]] = ()) -> tuple[Part, ...]:
    """The parts of an answer, from its text pieces and the other events it said, in order.

    ``marks`` are the non-text events, each with how many of ``texts`` came before it: a run notes text deltas
    in a plain list (the hot path) and marks only the rarer events. Usage, error and finish events are left to
    the caller (they describe how the answer ended, not where in it).
    """
    builder = _Builder()
    done = 0
    for at, event in marks:
        if at > done:
            builder.run(TextPart, "".join(texts[done:at]))
            done = at
        if isinstance(event, TextDelta):
            builder.run(TextPart, event.text)
        else:
            builder.event(event)
    builder.run(TextPart, "".join(texts[done:]))
    return builder.build()
