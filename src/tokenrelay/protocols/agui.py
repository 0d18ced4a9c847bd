"""AG-UI, the Agent–User Interaction protocol (1.0): what ``@ag-ui/client``'s ``HttpAgent`` reads.

Each frame is ``data: <one AG-UI event as JSON>``, with the event shapes of the 1.0 schema (``@ag-ui/core``,
``ag_ui.core``):

- ``RUN_STARTED`` (``threadId`` is the conversation, ``runId`` the tokenrelay run, ``protocolVersion`` "1.0") opens
  every response;
- the answer's text is an assistant message: ``TEXT_MESSAGE_START`` / ``_CONTENT`` / ``_END``; reasoning is a
  reasoning span holding one reasoning message (``REASONING_START``, ``REASONING_MESSAGE_START`` / ``_CONTENT`` /
  ``_END``, ``REASONING_END``);
- a tool call is ``TOOL_CALL_START`` (its ``parentMessageId`` is the step's assistant message), ``TOOL_CALL_ARGS``,
  ``TOOL_CALL_END`` once its arguments are complete, then ``TOOL_CALL_RESULT`` (a tool message; a failed call says
  ``metadata.isError``). Tools run on the server; the model's words after a result are a new assistant message;
- metadata (an agent handoff, a queue position) is a ``CUSTOM`` event named ``metadata``;
- the run ends with ``RUN_FINISHED`` (``usage``; ``outcome: {"type": "cancelled"}`` for a cancelled run;
  ``metadata.finishReason``) or ``RUN_ERROR`` (``code``, ``message``, ``metadata.retryable``);
- a call that needs a person's approval is an interrupt: the call is streamed (if it was not), and the run's pause
  is ``RUN_FINISHED`` with ``outcome: {"type": "interrupt", "interrupts": [...]}``, one interrupt per pending call
  (``id`` and ``toolCallId`` are the call id, ``reason`` is ``tool_approval``, ``expiresAt`` ISO 8601). The
  response ends there; the answers come back as the next input's ``resume`` entries, and that response is the same
  run going on: ``RUN_STARTED`` again, a ``CUSTOM`` ``tool-approval-response`` per answer, then the continuation.

Every frame carries an SSE ``id:``: an event's last frame carries the event's sequence id, and the frames before it
(a message's start, say) the id of the event before, so ``Last-Event-ID`` is always where to resume from. Message
ids are counters within the run (``<run id>-1``, ``-2``...), the same however the events were coalesced, so a
resumed stream (:meth:`AGUIEncoder.prime`) continues the same messages: it starts with ``RUN_STARTED`` (a client
reads each response as a run of its own) and re-opens what was in flight when the client's id was written, each
only when the run next touches it — the text or reasoning message with its ``*_START`` (same id), a tool call whose
arguments were still streaming with its ``TOOL_CALL_START``. AG-UI's own client appends a re-opened message's
content to the message it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, assert_never

from tokenrelay import sse
from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    RunPaused,
    StoredEvent,
    ToolApprovalRequest,
    ToolApprovalResponse,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.protocols._json import dumps as _json
from tokenrelay.protocols.base import StreamContext

__all__ = ["AGUI_PROTOCOL_VERSION", "APPROVAL_SCHEMA", "AGUIEncoder", "AGUIProtocol", "iso_time"]

AGUI_PROTOCOL_VERSION = "1.0"

# Every frame has its id: the per-token path formats one in a single step.
_FRAME = b"id: %d\ndata: %s\n\n"

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["approved"],
}
"""The answer an approval interrupt expects as its resume entry's ``payload``."""


def iso_time(unix_s: float) -> str:
    """``unix_s`` as ISO 8601 in UTC, to the millisecond (AG-UI's ``expiresAt``)."""
    stamp = datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class AGUIEncoder:
    """One connection's AG-UI event stream. Stateful: it tracks the open messages and tool calls."""

    sse_retry: ClassVar[bool] = True
    ends_at_pause: ClassVar[bool] = True

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._run = _json({"threadId": ctx.conversation_id, "runId": ctx.run_id})[1:-1]
        self._cursor = 0  # the last event whose frames are all written: every other frame's id
        self._announce = True  # a RUN_STARTED comes before the next frame
        self._ended = False
        self._ids = 0
        self._step: bytes | None = None  # the step's assistant message id (JSON), for its text and tool calls
        self._text: bytes | None = None  # the open text message's id
        self._reasoning: bytes | None = None  # the open reasoning message's id
        self._calls: dict[str, tuple[str, bytes]] = {}  # calls whose arguments may still grow: name, parent
        self._seen: set[str] = set()  # every call streamed so far
        self._usage: UsageEvent | None = None
        self._error: ErrorEvent | None = None
        self._interrupts: list[dict[str, Any]] = []
        self._out: list[bytes] = []
        # After a resume: what was in flight that this connection's reader has not seen start.
        self._reopen: set[bytes] = set()
        self._reopen_calls: set[str] = set()

    def open(self) -> bytes:
        if not self._announce or self._ended:
            return b""
        self._announce = False
        return _FRAME % (self._cursor, self._run_started())

    def heartbeat(self) -> bytes:
        return sse.PING

    def prime(self, earlier: Sequence[StoredEvent]) -> None:
        """Catch up with the events a resuming client already has, writing nothing."""
        for item in earlier:
            if self._ended:
                break
            self._event(item.event)
            self._cursor = item.seq
        self._out.clear()
        self._announce = not self._ended
        self._reopen = {part for part in (self._text, self._reasoning) if part is not None}
        self._reopen_calls = set(self._calls)

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        frames: list[bytes] = []
        out = self._out
        for item in batch:
            if self._ended:
                break
            self._event(item.event)
            if out:
                last = out.pop()
                frames.extend(_FRAME % (self._cursor, data) for data in out)
                frames.append(_FRAME % (item.seq, last))
                out.clear()
            self._cursor = item.seq
        return b"".join(frames)

    def _emit(self, data: bytes) -> None:
        if self._announce:
            self._announce = False
            self._out.append(self._run_started())
        self._out.append(data)

    def _run_started(self) -> bytes:
        return b'{"type":"RUN_STARTED",%s,"protocolVersion":"%s"}' % (self._run, AGUI_PROTOCOL_VERSION.encode())

    def _event(self, event: Event) -> None:
        # Matching on the tag keeps the per-token path as fast as a type check, and narrows ``event`` all the same.
        match event.type:
            case "text-delta":
                if self._text is None:
                    self._settle()
                    self._text = self._assistant()
                    self._emit(b'{"type":"TEXT_MESSAGE_START","messageId":%s,"role":"assistant"}' % self._text)
                elif self._reopen:
                    self._reopen_message(self._text)
                data = b'{"type":"TEXT_MESSAGE_CONTENT","messageId":%s,"delta":%s}' % (self._text, _json(event.text))
                self._emit(data)
            case "reasoning-delta":
                self._reasoning_delta(event.text)
            case "tool-call-start":
                self._tool_call_start(event)
            case "tool-call-args-delta":
                self._tool_call_args(event)
            case "tool-call-result":
                self._tool_call_result(event)
            case "usage" | "error":
                self._note(event)
            case "metadata":
                self._emit(_json({"type": "CUSTOM", "name": "metadata", "value": event.data}))
            case "finish":
                self._finish(event)
            case "tool-approval-request" | "tool-approval-response" | "paused":
                self._approval(event)
            case _:
                assert_never(event)

    def _note(self, event: UsageEvent | ErrorEvent) -> None:
        """Usage and errors are said by the run's end: RUN_ERROR is the last event of a run."""
        if isinstance(event, UsageEvent):
            self._usage = event
        else:
            self._error = event

    def _approval(self, event: ToolApprovalRequest | ToolApprovalResponse | RunPaused) -> None:
        if isinstance(event, ToolApprovalRequest):
            self._approval_request(event)
        elif isinstance(event, ToolApprovalResponse):
            self._approval_response(event)
        else:
            self._pause(event.expires_at)

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self._ctx.run_id}-{self._ids}"

    def _new_id(self) -> bytes:
        return _json(self._next_id())

    def _assistant(self) -> bytes:
        """The step's assistant message: its text and the tool calls it makes are one message."""
        if self._step is None:
            self._step = self._new_id()
        return self._step

    def _reasoning_delta(self, text: str) -> None:
        if self._reasoning is None:
            self._settle()
            self._reasoning = self._new_id()
            self._reasoning_start(self._reasoning)
        elif self._reopen:
            self._reopen_message(self._reasoning)
        self._emit(b'{"type":"REASONING_MESSAGE_CONTENT","messageId":%s,"delta":%s}' % (self._reasoning, _json(text)))

    def _reasoning_start(self, part: bytes) -> None:
        self._emit(b'{"type":"REASONING_START","messageId":%s}' % part)
        self._emit(b'{"type":"REASONING_MESSAGE_START","messageId":%s,"role":"reasoning"}' % part)

    def _reopen_message(self, part: bytes) -> None:
        if part in self._reopen:
            self._reopen.discard(part)
            if part == self._reasoning:
                self._reasoning_start(part)
            else:
                self._emit(b'{"type":"TEXT_MESSAGE_START","messageId":%s,"role":"assistant"}' % part)

    def _settle(self, *, tools: bool = True) -> None:
        """Close the open text or reasoning message (and, unless a tool call follows, the streaming tool calls)."""
        # Something still waiting to be re-opened ends unseen: its end would name what this reader never started.
        if self._text is not None:
            if not self._unseen(self._text):
                self._emit(b'{"type":"TEXT_MESSAGE_END","messageId":%s}' % self._text)
            self._text = None
        if self._reasoning is not None:
            if not self._unseen(self._reasoning):
                self._emit(b'{"type":"REASONING_MESSAGE_END","messageId":%s}' % self._reasoning)
                self._emit(b'{"type":"REASONING_END","messageId":%s}' % self._reasoning)
            self._reasoning = None
        if tools:
            for call_id in list(self._calls):
                self._end_call(call_id)

    def _unseen(self, part: bytes) -> bool:
        if part in self._reopen:
            self._reopen.discard(part)
            return True
        return False

    def _tool_call_start(self, event: ToolCallStart) -> None:
        self._settle(tools=False)
        parent = self._assistant()
        self._calls[event.call_id] = (event.name, parent)
        self._seen.add(event.call_id)
        self._emit(self._call_start(event.call_id, event.name, parent))

    def _call_start(self, call_id: str, name: str, parent: bytes) -> bytes:
        start = {"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": name}
        return _json(start)[:-1] + b',"parentMessageId":%s}' % parent

    def _tool_call_args(self, event: ToolCallArgsDelta) -> None:
        call = self._calls.get(event.call_id)
        if call is None:
            return  # arguments for a call that is not streaming: nothing to add them to
        if event.call_id in self._reopen_calls:
            self._reopen_calls.discard(event.call_id)
            self._emit(self._call_start(event.call_id, *call))
        self._emit(_json({"type": "TOOL_CALL_ARGS", "toolCallId": event.call_id, "delta": event.delta}))

    def _end_call(self, call_id: str) -> None:
        if self._calls.pop(call_id, None) is None:
            return
        if call_id in self._reopen_calls:
            self._reopen_calls.discard(call_id)  # this reader never saw it start: it ends unseen
        else:
            self._emit(_json({"type": "TOOL_CALL_END", "toolCallId": call_id}))

    def _tool_call_result(self, event: ToolCallResult) -> None:
        self._settle(tools=False)
        self._end_call(event.call_id)
        result: dict[str, Any] = {"type": "TOOL_CALL_RESULT", "messageId": self._next_id()}
        result.update(toolCallId=event.call_id, content=event.output, role="tool")
        if event.is_error:
            result["metadata"] = {"isError": True}
        self._emit(_json(result))
        self._step = None  # the model's words after a tool result are its next message

    def _approval_request(self, event: ToolApprovalRequest) -> None:
        call_id = event.call_id
        if call_id not in self._seen:  # asked for without streaming the call first: the call, whole
            self._tool_call_start(ToolCallStart(call_id, event.name))
            # Its arguments are the event's last frame (what a resume after it must not repeat); the call ends with
            # the pause, like every call still open.
            self._tool_call_args(ToolCallArgsDelta(call_id, event.arguments))
        self._interrupts.append(
            {
                "id": call_id,
                "reason": "tool_approval",
                "message": f"Allow {event.name}({event.arguments})?",
                "toolCallId": call_id,
                "responseSchema": APPROVAL_SCHEMA,
                "metadata": {"toolName": event.name, "arguments": event.arguments},
            }
        )

    def _approval_response(self, event: ToolApprovalResponse) -> None:
        value: dict[str, Any] = {"toolCallId": event.call_id, "approved": event.approved}
        if event.reason is not None:
            value["reason"] = event.reason
        self._emit(_json({"type": "CUSTOM", "name": "tool-approval-response", "value": value}))

    def _pause(self, expires_at: float) -> None:
        self._settle()
        finished = self._run_finished()
        if self._interrupts:
            expiry = iso_time(expires_at)
            interrupts = [{**interrupt, "expiresAt": expiry} for interrupt in self._interrupts]
            finished["outcome"] = {"type": "interrupt", "interrupts": interrupts}
        self._interrupts = []
        self._emit(_json(finished))
        # The run goes on as a response of its own (a new AG-UI run), its text in a new message.
        self._announce = True
        self._step = None

    def _run_finished(self) -> dict[str, Any]:
        return {"type": "RUN_FINISHED", "threadId": self._ctx.conversation_id, "runId": self._ctx.run_id}

    def _finish(self, event: FinishEvent) -> None:
        self._settle()
        self._ended = True
        body: dict[str, Any]
        if self._error is not None or event.reason == "error":
            error = self._error or ErrorEvent("error", "the run failed")
            body = {"type": "RUN_ERROR", "message": error.message, "code": error.code}
            meta: dict[str, Any] = {"retryable": error.retryable}
            if error.retry_after is not None:
                meta["retryAfter"] = error.retry_after
        else:
            body = self._run_finished()
            if event.reason == "cancelled":
                body["outcome"] = {"type": "cancelled"}
            meta = {"finishReason": event.reason}
        usage = self._token_usage()
        if usage:
            body["usage"] = [usage]
        if event.saved is False:
            meta["saved"] = False
        body["metadata"] = meta
        self._emit(_json(body))

    def _token_usage(self) -> dict[str, int]:
        usage = self._usage
        if usage is None:
            return {}
        counts = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
        out = {key: value for key, value in counts.items() if value is not None}
        if usage.input_tokens is not None and usage.output_tokens is not None:
            out["totalTokens"] = usage.input_tokens + usage.output_tokens
        return out


class AGUIProtocol:
    """``?protocol=ag-ui``: the AG-UI event stream that ``@ag-ui/client``'s ``HttpAgent`` reads."""

    name: ClassVar[str] = "ag-ui"
    media_type: ClassVar[str] = "text/event-stream"
    headers: ClassVar[dict[str, str]] = {}

    def encoder(self, ctx: StreamContext) -> AGUIEncoder:
        return AGUIEncoder(ctx)
