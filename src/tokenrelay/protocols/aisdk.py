"""The Vercel AI SDK's UI message stream, v1: what ``useChat`` (``DefaultChatTransport``) reads.

Each frame is ``data: <one UI message chunk as JSON>``; the stream ends with ``data: [DONE]``. The chunk shapes are
the ``ai`` package's ``uiMessageChunkSchema``:

- ``start`` (``messageId``, ``messageMetadata``) and ``start-step`` open the answer;
- text and reasoning come as parts: ``text-start`` / ``text-delta`` / ``text-end`` with an ``id``, the same for
  ``reasoning-*``;
- a tool call is ``tool-input-start`` (``toolCallId``, ``toolName``), ``tool-input-delta`` (``inputTextDelta``),
  ``tool-input-available`` (``input``, the parsed JSON arguments), then ``tool-output-available`` (``output``) or
  ``tool-output-error``. Tools run on the server, so every tool chunk says ``providerExecuted: true`` and the client
  never tries to run them; the model's next turn after a tool result is a new step;
- ``finish-step`` and ``finish`` (``finishReason``) close a completed answer, ``error`` (``errorText``) reports a
  failure, and a cancelled run ends with ``abort``.
- a call that needs a person's approval is ``tool-approval-request`` (``approvalId`` is the call id) after its
  settled input; the run's pause then ends the response (``finish-step``, ``finish`` with ``tool-calls``): useChat is
  turn-based, and its next request (``addToolApprovalResponse``) gets the continuation, which starts the same
  message again (``start``, ``start-step``). A denied call's result is ``tool-output-denied``.

Frames carry the run's sequence ids (``id:``) like every tokenrelay stream: the last frame written for an event
carries its id, so resuming after it is exact. Part ids are counters (``text-1``, ``reasoning-2``), not sequence
ids, so they come out the same however the deltas were coalesced — which is what lets a resume after an event id
catch up with :meth:`AISDKEncoder.prime` and continue the same parts.

A resumed stream is read by a fresh stream parser: the ``ai`` package keeps its open parts per stream, and refuses a
``text-delta`` (or ``-end``) for a part that stream has not started. So a resume re-opens what was in flight when
the client's id was written, each only when the run next touches it: ``text-start`` / ``reasoning-start`` (same
id) before an open part's next delta (a part that ends before saying more is left alone); ``tool-input-start`` with
the arguments so far as one ``tool-input-delta`` before a streaming tool call's next fragment; the settled
``tool-input-available`` (or ``tool-input-error``) again before the result of a call that was waiting for it. The
SDK then shows the continuation of a text or reasoning part as a part of its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, assert_never

from tokenrelay import sse
from tokenrelay.events import (
    Event,
    FinishReason,
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

__all__ = ["AISDK_HEADERS", "AISDKEncoder", "AISDKProtocol", "finish_reason"]

AISDK_HEADERS: dict[str, str] = {"x-vercel-ai-ui-message-stream": "v1"}

DONE = b"[DONE]"

# Frames around one chunk's JSON, formatted in one step on the per-token path: the event's last frame carries its id.
_DATA_FRAME = sse.frame_format(b"%s", with_id=False)
_ID_FRAME = sse.frame_format(b"%s")

_FINISH_REASONS: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
    "error": "error",
    "cancelled": "other",
}


def finish_reason(reason: FinishReason) -> str:
    """The AI SDK's name for a run's finish reason."""
    return _FINISH_REASONS.get(reason, "other")


class AISDKEncoder:
    """One connection's UI message stream. Stateful: it tracks the open text, reasoning and tool-call parts."""

    sse_retry: ClassVar[bool] = True
    ends_at_pause: ClassVar[bool] = True

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._started = False
        self._paused = False  # the last event was the run's pause: what follows is a new response's
        self._awaiting: set[str] = set()  # calls whose approval was asked for (the client holds their part)
        self._denied: set[str] = set()
        self._ended = False
        self._parts = 0
        self._text: bytes | None = None  # the open text part's id, JSON-encoded
        self._reasoning: bytes | None = None
        self._tool_names: dict[str, str] = {}
        self._pending_inputs: dict[str, list[str]] = {}  # tool calls whose arguments may still grow
        self._inputs: dict[str, bytes] = {}  # settled tool inputs (their chunk), kept until the call's result
        self._step_done = False  # a tool result arrived: the model's next words are a new step
        self._usage: UsageEvent | None = None
        self._out: list[bytes] = []
        # After a resume: parts and tool calls in flight that this connection's reader has not seen start.
        self._reopen: set[bytes] = set()
        self._reopen_calls: set[str] = set()

    def open(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        start = {
            "type": "start",
            "messageId": self._ctx.run_id,
            "messageMetadata": {"runId": self._ctx.run_id, "conversationId": self._ctx.conversation_id},
        }
        return sse.frame(_json(start)) + sse.frame(b'{"type":"start-step"}')

    def heartbeat(self) -> bytes:
        return sse.PING

    def prime(self, earlier: Sequence[StoredEvent]) -> None:
        """Catch up with the events a resuming client already has, writing nothing."""
        self._started = True
        for item in earlier:
            self._event(item.event)
        self._out.clear()
        self._reopen = {part for part in (self._text, self._reasoning) if part is not None}
        self._reopen_calls = set(self._tool_names) - self._awaiting  # the calls still waiting for their result
        if self._paused:
            # The continuation of a paused run: a response of its own, for the message the client holds.
            self._started = self._ended = self._paused = False

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        frames: list[bytes] = []
        for item in batch:
            if self._ended:
                break
            self._event(item.event)
            if not self._out:
                continue
            last = self._out.pop()
            frames.extend(_DATA_FRAME % data for data in self._out)
            frames.append(_ID_FRAME % (item.seq, last))
            self._out.clear()
        return b"".join(frames)

    def _event(self, event: Event) -> None:
        # Matching on the tag keeps the per-token path as fast as a type check, and narrows ``event`` all the same.
        match event.type:
            case "text-delta":
                if self._text is None:
                    self._settle()
                    self._text = self._new_part("text")
                    self._out.append(b'{"type":"text-start","id":%s}' % self._text)
                elif self._reopen:
                    self._reopen_part(self._text, b"text")
                self._out.append(b'{"type":"text-delta","id":%s,"delta":%s}' % (self._text, _json(event.text)))
            case "reasoning-delta":
                self._reasoning_delta(event.text)
            case "tool-call-start":
                self._tool_call_start(event)
            case "tool-call-args-delta":
                self._tool_call_args(event)
            case "tool-call-result":
                self._tool_call_result(event)
            case "usage":
                self._usage = event
            case "metadata":
                # Transient: handed to useChat's onData, never stored in the message.
                self._out.append(_json({"type": "data-metadata", "data": event.data, "transient": True}))
            case "error":
                self._out.append(_json({"type": "error", "errorText": event.message}))
            case "finish":
                self._finish(event.reason)
            case _:
                self._approval(event)

    def _approval(self, event: ToolApprovalRequest | ToolApprovalResponse | RunPaused) -> None:
        match event.type:
            case "tool-approval-request":
                self._approval_request(event)
            case "tool-approval-response":
                if not event.approved:
                    self._denied.add(event.call_id)
            case "paused":
                self._finish("tool_calls")
                self._paused = True
            case _:
                assert_never(event)

    def _approval_request(self, event: ToolApprovalRequest) -> None:
        call_id = event.call_id
        if call_id in self._pending_inputs:
            self._input_available(call_id)
        elif call_id not in self._tool_names:  # asked for without streaming the call first: the call, whole
            self._tool_call_start(ToolCallStart(call_id, event.name))
            self._pending_inputs[call_id].append(event.arguments)
            self._input_available(call_id)
        elif call_id in self._reopen_calls:
            self._reopen_calls.discard(call_id)
            self._out.append(self._inputs[call_id])
        self._awaiting.add(call_id)
        self._out.append(_json({"type": "tool-approval-request", "approvalId": call_id, "toolCallId": call_id}))

    def _reasoning_delta(self, text: str) -> None:
        if self._reasoning is None:
            self._settle()
            self._reasoning = self._new_part("reasoning")
            self._out.append(b'{"type":"reasoning-start","id":%s}' % self._reasoning)
        elif self._reopen:
            self._reopen_part(self._reasoning, b"reasoning")
        self._out.append(b'{"type":"reasoning-delta","id":%s,"delta":%s}' % (self._reasoning, _json(text)))

    def _reopen_part(self, part: bytes, kind: bytes) -> None:
        if part in self._reopen:
            self._reopen.discard(part)
            self._out.append(b'{"type":"%s-start","id":%s}' % (kind, part))

    def _tool_call_start(self, event: ToolCallStart) -> None:
        self._settle(tools=False)
        self._tool_names[event.call_id] = event.name
        self._pending_inputs[event.call_id] = []
        chunk = {"type": "tool-input-start", "toolCallId": event.call_id, "toolName": event.name}
        self._out.append(_json({**chunk, "providerExecuted": True}))

    def _tool_call_args(self, event: ToolCallArgsDelta) -> None:
        pending = self._pending_inputs.get(event.call_id)
        if pending is not None:
            if event.call_id in self._reopen_calls:
                self._reopen_input(event.call_id, "".join(pending))
            pending.append(event.delta)
            delta = {"type": "tool-input-delta", "toolCallId": event.call_id, "inputTextDelta": event.delta}
            self._out.append(_json(delta))

    def _reopen_input(self, call_id: str, so_far: str) -> None:
        """Start a tool call's input again for a resumed reader, with the arguments it streamed so far."""
        self._reopen_calls.discard(call_id)
        chunk = {"type": "tool-input-start", "toolCallId": call_id, "toolName": self._tool_names[call_id]}
        self._out.append(_json({**chunk, "providerExecuted": True}))
        if so_far:
            self._out.append(_json({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": so_far}))

    def _tool_call_result(self, event: ToolCallResult) -> None:
        if event.call_id in self._pending_inputs:
            self._input_available(event.call_id)
        elif event.call_id in self._reopen_calls:
            # A resumed reader may not hold the call: its settled input again, so the result has a part to land in.
            self._reopen_calls.discard(event.call_id)
            self._out.append(self._inputs[event.call_id])
        if self._tool_names.pop(event.call_id, None) is not None:
            self._inputs.pop(event.call_id, None)
            self._awaiting.discard(event.call_id)
            chunk: dict[str, Any]
            if event.call_id in self._denied:
                chunk = {"type": "tool-output-denied", "toolCallId": event.call_id}
            elif event.is_error:
                chunk = {"type": "tool-output-error", "toolCallId": event.call_id, "errorText": event.output}
            else:
                chunk = {"type": "tool-output-available", "toolCallId": event.call_id, "output": event.output}
            self._out.append(_json({**chunk, "providerExecuted": True}))
            self._step_done = True

    def _new_part(self, kind: str) -> bytes:
        self._parts += 1
        return b'"%s-%d"' % (kind.encode(), self._parts)

    def _settle(self, *, tools: bool = True) -> None:
        """Close the open text or reasoning part (and, unless a tool call follows, the pending tool inputs)."""
        # A part still waiting to be re-opened ends unseen: its end would name a part this reader never started.
        if self._text is not None:
            self._end_part(self._text, b"text")
            self._text = None
        if self._reasoning is not None:
            self._end_part(self._reasoning, b"reasoning")
            self._reasoning = None
        if tools:
            for call_id in list(self._pending_inputs):
                self._input_available(call_id)
        if self._step_done:
            self._step_done = False
            self._out.append(b'{"type":"finish-step"}')
            self._out.append(b'{"type":"start-step"}')

    def _end_part(self, part: bytes, kind: bytes) -> None:
        if part in self._reopen:
            self._reopen.discard(part)
        else:
            self._out.append(b'{"type":"%s-end","id":%s}' % (kind, part))

    def _input_available(self, call_id: str) -> None:
        raw = "".join(self._pending_inputs.pop(call_id))
        name = self._tool_names[call_id]
        # The settled input creates the tool part when a resumed reader has none: nothing to re-open first.
        self._reopen_calls.discard(call_id)
        chunk: dict[str, Any]
        try:
            parsed: Any = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            chunk = {"type": "tool-input-error", "toolCallId": call_id, "toolName": name, "input": raw}
            chunk["errorText"] = f"invalid JSON arguments: {exc}"
        else:
            chunk = {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": parsed}
        settled = _json({**chunk, "providerExecuted": True})
        self._inputs[call_id] = settled
        self._out.append(settled)

    def _finish(self, reason: FinishReason) -> None:
        self._step_done = False
        self._settle()
        self._ended = True
        if reason == "cancelled":
            self._out.append(_json({"type": "abort", "reason": "cancelled"}))
        else:
            self._out.append(b'{"type":"finish-step"}')
            finish: dict[str, Any] = {"type": "finish", "finishReason": finish_reason(reason)}
            if self._usage is not None:
                usage = {"inputTokens": self._usage.input_tokens, "outputTokens": self._usage.output_tokens}
                finish["messageMetadata"] = {"usage": usage}
            self._out.append(_json(finish))
        self._out.append(DONE)


class AISDKProtocol:
    """``?protocol=ai-sdk``: the UI message stream that ``@ai-sdk/react``'s ``useChat`` reads."""

    name: ClassVar[str] = "ai-sdk"
    media_type: ClassVar[str] = "text/event-stream"
    headers: ClassVar[dict[str, str]] = AISDK_HEADERS

    def encoder(self, ctx: StreamContext) -> AISDKEncoder:
        return AISDKEncoder(ctx)
