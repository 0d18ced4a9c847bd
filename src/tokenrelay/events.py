"""The event vocabulary: what a backend says while it generates.

Backends produce these; protocols encode them; stores persist them. The union is discriminated by ``type`` and
versioned by :data:`EVENTS_VERSION` so that a store written by one release can be read by the next (an unknown
``type`` is a :class:`ValueError`, never a silent drop).

The classes are frozen slotted dataclasses rather than pydantic models: an event is created for every token, and
the hot path should cost an allocation, not a validation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "EVENTS_VERSION",
    "ErrorEvent",
    "Event",
    "EventType",
    "FinishEvent",
    "FinishReason",
    "MetadataEvent",
    "ReasoningDelta",
    "RunPaused",
    "StoredEvent",
    "TextDelta",
    "ToolApprovalRequest",
    "ToolApprovalResponse",
    "ToolCallArgsDelta",
    "ToolCallResult",
    "ToolCallStart",
    "UsageEvent",
    "event_from_dict",
    "event_to_dict",
]

EVENTS_VERSION = 1

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str
    type: Literal["text-delta"] = field(default="text-delta", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("thinking"), shown apart from the answer."""

    text: str
    type: Literal["reasoning-delta"] = field(default="reasoning-delta", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """The model started calling tool ``name``; ``call_id`` ties the arguments and result to it."""

    call_id: str
    name: str
    type: Literal["tool-call-start"] = field(default="tool-call-start", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolCallArgsDelta:
    """A fragment of a tool call's JSON arguments, in order."""

    call_id: str
    delta: str
    type: Literal["tool-call-args-delta"] = field(default="tool-call-args-delta", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolCallResult:
    """What the tool returned (or the error it raised, with ``is_error``)."""

    call_id: str
    output: str
    is_error: bool = False
    type: Literal["tool-call-result"] = field(default="tool-call-result", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Token counts, as the backend reports them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    type: Literal["usage"] = field(default="usage", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class MetadataEvent:
    """Out-of-band facts worth showing (an agent handoff, a queue position); never part of the answer."""

    data: dict[str, Any] = field(default_factory=dict)
    type: Literal["metadata"] = field(default="metadata", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The generation failed. ``retryable`` says whether trying again may succeed (rate limit, overload), and
    ``retry_after`` how many seconds to wait first when the upstream said so."""

    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None
    type: Literal["error"] = field(default="error", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class FinishEvent:
    """The last event of every run.

    ``saved`` is ``False`` when the run could not write its answer to history (the answer the viewers saw is not in
    the conversation); ``None`` otherwise, and then it is left out of the event's dict, so that a log written with
    it unset reads the same in a release that does not know the field.
    """

    reason: FinishReason = "stop"
    saved: bool | None = None
    type: Literal["finish"] = field(default="finish", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolApprovalRequest:
    """The model asked to call tool ``name`` with ``arguments`` (JSON text), a call that needs a person's approval:
    it has NOT run."""

    call_id: str
    name: str
    arguments: str
    type: Literal["tool-approval-request"] = field(default="tool-approval-request", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ToolApprovalResponse:
    """A person answered the approval request of ``call_id`` (in the run's log, so every viewer sees it)."""

    call_id: str
    approved: bool
    reason: str | None = None
    type: Literal["tool-approval-response"] = field(default="tool-approval-response", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class RunPaused:
    """Every pending approval request is before this: the run waits (no model call open, no process holding it)
    until each is answered, then goes on under the next ids, or until ``expires_at`` (unix seconds), when it ends
    with an ``approval_expired`` error."""

    expires_at: float
    type: Literal["paused"] = field(default="paused", init=False, repr=False)


Event = (
    TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallArgsDelta
    | ToolCallResult
    | UsageEvent
    | MetadataEvent
    | ErrorEvent
    | FinishEvent
    | ToolApprovalRequest
    | ToolApprovalResponse
    | RunPaused
)

EventType = Literal[
    "text-delta",
    "reasoning-delta",
    "tool-call-start",
    "tool-call-args-delta",
    "tool-call-result",
    "usage",
    "metadata",
    "error",
    "finish",
    "tool-approval-request",
    "tool-approval-response",
    "paused",
]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with its sequence id: 1, 2, 3... within its run. The id is the SSE ``id:`` and the resume cursor."""

    seq: int
    event: Event


_BY_TYPE: dict[str, type[Event]] = {
    "text-delta": TextDelta,
    "reasoning-delta": ReasoningDelta,
    "tool-call-start": ToolCallStart,
    "tool-call-args-delta": ToolCallArgsDelta,
    "tool-call-result": ToolCallResult,
    "usage": UsageEvent,
    "metadata": MetadataEvent,
    "error": ErrorEvent,
    "finish": FinishEvent,
    "tool-approval-request": ToolApprovalRequest,
    "tool-approval-response": ToolApprovalResponse,
    "paused": RunPaused,
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with the ``type`` discriminator first (a finish's ``saved`` only when it is set)."""
    data = {"type": event.type, **asdict(event)}
    if type(event) is FinishEvent and event.saved is None:
        del data["saved"]
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of :func:`event_to_dict`; raises ``ValueError`` on an unknown type or bad fields."""
    fields = dict(data)
    kind = fields.pop("type", None)
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad fields for event {kind!r}: {exc}") from None
