"""The events a client sees, parsed from the seed protocol's frames.

One class per frame the server sends (see :mod:`tokenrelay.protocols.seed`): the answer's text (:class:`Delta`), the
model's reasoning (:class:`Reasoning`), a tool call as it starts, its arguments as they stream and its result
(:class:`ToolCall`, :class:`ToolCallDelta`, :class:`ToolResult`), out-of-band facts such as a queue position
(:class:`Metadata`), a mid-stream failure (:class:`StreamError`) and the end (:class:`Done`, with the :class:`Usage`).
A tool call that needs a person's approval is an :class:`ApprovalRequest`; the run then pauses (:class:`Paused`)
until it is answered (``client.approve``), and the answer shows as an :class:`ApprovalResponse`.
A frame of a later server this client does not know is an :class:`Other`, never an error: new frames can be added
without breaking old clients.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenrelay.sse import ServerSentEvent

__all__ = [
    "ApprovalRequest",
    "ApprovalResponse",
    "ChatResult",
    "Delta",
    "Done",
    "Metadata",
    "Other",
    "Paused",
    "Reasoning",
    "StreamError",
    "StreamEvent",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallRecord",
    "ToolResult",
    "Usage",
    "parse",
]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text."""

    text: str
    id: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning ("thinking"): shown apart from the answer, never part of it."""

    text: str
    id: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model started calling tool ``name``; ``call_id`` ties the arguments and the result to this call."""

    call_id: str
    name: str
    id: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call's JSON arguments, in order: the arguments are the fragments joined."""

    call_id: str
    arguments: str
    id: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool run by the server returned, or the error it raised (``is_error``)."""

    call_id: str
    output: str
    is_error: bool
    id: str


@dataclass(frozen=True, slots=True)
class Metadata:
    """Out-of-band facts about the run (a queue position, an agent handoff); never part of the answer."""

    data: dict[str, Any]
    id: str

    @property
    def queue_position(self) -> int | None:
        """How many runs are ahead of this one for the model, when the server says so."""
        value = self.data.get("queue_position")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error frame: the run failed mid-stream. The done frame follows."""

    code: str
    message: str
    retryable: bool
    id: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, as the backend reported them (``None``: not reported)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The done frame: the run is over, and why.

    ``saved`` is ``False`` when the server could not save the answer to the conversation's history (a follow-up
    would then miss it); ``None`` when it did not say, which is the normal case.
    """

    finish_reason: str
    run_id: str | None
    conversation_id: str | None
    usage: Usage | None
    id: str
    saved: bool | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """The model asked to call tool ``name`` with ``arguments`` (JSON text), a call that waits for a person's
    approval: answer it with ``client.approve(run_id, call_id, approved)``."""

    call_id: str
    name: str
    arguments: str
    id: str


@dataclass(frozen=True, slots=True)
class ApprovalResponse:
    """The approval request of ``call_id`` was answered (by whoever answered it)."""

    call_id: str
    approved: bool
    reason: str | None
    id: str


@dataclass(frozen=True, slots=True)
class Paused:
    """The run waits for its approval requests to be answered, until ``expires_at`` (unix seconds). The stream stays
    open and goes on when the run does."""

    expires_at: float
    id: str


@dataclass(frozen=True, slots=True)
class Other:
    """A frame this client does not model (a newer server's): the decoded JSON."""

    data: dict[str, Any]
    id: str


StreamEvent = (
    Delta
    | Reasoning
    | ToolCall
    | ToolCallDelta
    | ToolResult
    | Metadata
    | StreamError
    | Done
    | ApprovalRequest
    | ApprovalResponse
    | Paused
    | Other
)


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call of a whole answer: its name, its arguments, and its result once the tool has run."""

    call_id: str
    name: str
    arguments: str = ""
    output: str | None = None
    is_error: bool = False


@dataclass(slots=True)
class ChatResult:
    """A whole answer, as :meth:`AsyncClient.chat` / :meth:`Client.chat` collect it from the stream."""

    text: str
    finish_reason: str
    run_id: str | None
    conversation_id: str | None
    usage: Usage | None = None
    errors: list[StreamError] = field(default_factory=list)
    reasoning: str = ""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """Every metadata frame's keys, the latest value winning."""
    saved: bool | None = None
    approvals: list[ApprovalRequest] = field(default_factory=list)
    """The approval requests of the answer, in order."""

    def add(self, event: StreamEvent) -> None:
        """Take one more event of the stream into the result."""
        match event:
            case Delta():
                self.text += event.text
            case Reasoning():
                self.reasoning += event.text
            case ToolCall():
                self.tool_calls.append(ToolCallRecord(event.call_id, event.name))
            case ToolCallDelta():
                self._call(event.call_id).arguments += event.arguments
            case ToolResult():
                call = self._call(event.call_id)
                call.output, call.is_error = event.output, event.is_error
            case Metadata():
                self.metadata.update(event.data)
            case StreamError():
                self.errors.append(event)
            case Done():
                self.finish_reason = event.finish_reason
                self.run_id = event.run_id
                self.conversation_id = event.conversation_id
                self.usage = event.usage
                self.saved = event.saved
            case ApprovalRequest():
                self.approvals.append(event)
            case ApprovalResponse() | Paused() | Other():
                pass

    def _call(self, call_id: str) -> ToolCallRecord:
        # A stream followed from the middle (``stream_run(after=n)``) can see a call's arguments without its start.
        for call in reversed(self.tool_calls):
            if call.call_id == call_id:
                return call
        self.tool_calls.append(ToolCallRecord(call_id, ""))
        return self.tool_calls[-1]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    return Usage(_int(value.get("input_tokens")), _int(value.get("output_tokens")))


def _done(data: dict[str, Any], id: str) -> Done:
    saved = data.get("saved")
    return Done(
        str(data.get("finish_reason", "stop")),
        data.get("run_id"),
        data.get("conversation_id"),
        _usage(data.get("usage")),
        id,
        saved if isinstance(saved, bool) else None,
    )


def _error(err: dict[str, Any], id: str) -> StreamError:
    return StreamError(str(err.get("code", "error")), str(err.get("message", "")), bool(err.get("retryable")), id)


def _tool_call(call: dict[str, Any], id: str) -> ToolCall:
    return ToolCall(str(call.get("id", "")), str(call.get("name", "")), id)


def _tool_call_delta(call: dict[str, Any], id: str) -> ToolCallDelta:
    return ToolCallDelta(str(call.get("id", "")), str(call.get("arguments", "")), id)


def _tool_result(result: dict[str, Any], id: str) -> ToolResult:
    return ToolResult(str(result.get("id", "")), str(result.get("output", "")), bool(result.get("is_error")), id)


def _approval_request(request: dict[str, Any], id: str) -> ApprovalRequest:
    return ApprovalRequest(
        str(request.get("id", "")), str(request.get("name", "")), str(request.get("arguments", "")), id
    )


def _approval(answer: dict[str, Any], id: str) -> ApprovalResponse:
    reason = answer.get("reason")
    return ApprovalResponse(
        str(answer.get("id", "")), answer.get("approved") is True, reason if isinstance(reason, str) else None, id
    )


def _paused(paused: dict[str, Any], id: str) -> Paused:
    expires_at = paused.get("expires_at")
    return Paused(float(expires_at) if isinstance(expires_at, int | float) else 0.0, id)


# The frames whose one key holds an object: that key, and how its object becomes an event.
_OBJECT_FRAMES: dict[str, Callable[[dict[str, Any], str], StreamEvent]] = {
    "error": _error,
    "tool_call": _tool_call,
    "tool_call_delta": _tool_call_delta,
    "tool_result": _tool_result,
    "metadata": Metadata,
    "approval_request": _approval_request,
    "approval": _approval,
    "paused": _paused,
}


def parse(sse: ServerSentEvent) -> StreamEvent:
    """One decoded SSE event as the client's event (raises ``ValueError`` if its data is not JSON)."""
    data = json.loads(sse.data)
    if not isinstance(data, dict):
        return Other({"value": data}, sse.id)
    if "delta" in data:
        return Delta(str(data["delta"]), sse.id)
    if data.get("done"):
        return _done(data, sse.id)
    if "reasoning" in data:
        return Reasoning(str(data["reasoning"]), sse.id)
    for key, make in _OBJECT_FRAMES.items():
        if isinstance(data.get(key), dict):
            return make(data[key], sse.id)
    return Other(data, sse.id)
