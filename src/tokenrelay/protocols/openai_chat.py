"""OpenAI's Chat Completions output: ``chat.completion.chunk`` frames, or one aggregated ``chat.completion``.

The stream is what the official ``openai`` clients read: a first chunk with ``delta.role``, then ``delta.content``
(``delta.reasoning_content`` for reasoning, as DeepSeek and vLLM send it; ``delta.tool_calls`` for tool calls), a
last chunk with ``finish_reason``, an optional usage chunk (``stream_options.include_usage``: empty ``choices``),
and ``data: [DONE]``. A failure mid-stream is one ``data: {"error": {...}}`` frame and the end of the stream, which
the ``openai`` client raises as ``APIError``. No ``id:`` lines: the frames are OpenAI's, byte for byte in shape.

A run that did not finish has no ``finish_reason`` in OpenAI's vocabulary ("stop" would claim a whole answer, and
"length" a cut one): a cancelled run ends like a failure, with an error frame whose ``code`` and ``type`` are
``"cancelled"`` (``APIError`` in the ``openai`` client, telling a cut-short answer from a whole one), and a
non-streaming request for it is refused with that error.

Tool results have no place in a Chat Completions response (there the client runs the tools), so the calls a backend
runs itself show as ``tool_calls`` and their results are left out — unless the encoder (or builder) is made with
``client_calls_only``, as ``/v1/chat/completions`` makes it: then ``tool_calls`` are only the calls the client is to
run, and a call the backend answered itself (a ``tool-call-result``) is left out with its result. The stream holds
each call until the turn ends or its result comes, and sends the unanswered ones whole before the last chunk.

A run that pauses for a person's approval ends the turn there: the pending calls as ``tool_calls`` (the ones not
streamed yet, whole) and ``finish_reason`` ``"tool_calls"``; the approval itself goes through
``POST /api/runs/{run_id}/approvals``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any, ClassVar, assert_never

from tokenrelay import sse
from tokenrelay.events import (
    ErrorEvent,
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

__all__ = [
    "CompletionBuilder",
    "OpenAIChatEncoder",
    "OpenAIChatProtocol",
    "completion_id",
    "error_body",
    "finish_reason",
    "model_id",
]

_DONE = sse.frame(b"[DONE]")

_FINISH_REASONS: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(reason: FinishReason) -> str | None:
    """OpenAI's name for a run's finish reason; ``None`` for a run that did not finish (cancelled, failed)."""
    return _FINISH_REASONS.get(reason)


def _unfinished(reason: FinishReason) -> ErrorEvent:
    """The error that ends a run with no OpenAI finish reason, when no error event has said why already."""
    if reason == "cancelled":
        return ErrorEvent("cancelled", "the run was cancelled before it finished")
    return ErrorEvent(reason, f"the run ended without finishing ({reason})")


def completion_id(run_id: str) -> str:
    return f"chatcmpl-{run_id}"


def model_id(info: Mapping[str, Any], fallback: str) -> str:
    """The model name to report, from a backend's ``describe()``: its ``model``, a GGUF file's name, or ``fallback``."""
    model = info.get("model")
    if not isinstance(model, str) or not model:
        return fallback
    return PurePath(model).name if model.endswith(".gguf") else model


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _usage(event: UsageEvent | None) -> dict[str, int]:
    prompt = (event.input_tokens if event else None) or 0
    completion = (event.output_tokens if event else None) or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class OpenAIChatEncoder:
    """One connection's ``chat.completion.chunk`` stream."""

    # No SSE "retry:" hint on these streams: the openai client's decoder takes that lone field for an event with
    # empty data, and fails to parse it as JSON.
    sse_retry: ClassVar[bool] = False
    ends_at_pause: ClassVar[bool] = True

    def __init__(
        self,
        ctx: StreamContext,
        *,
        model: str,
        include_usage: bool = False,
        created: int | None = None,
        client_calls_only: bool = False,
    ) -> None:
        self._include_usage = include_usage
        self._held: dict[str, tuple[str, list[str]]] | None = {} if client_calls_only else None
        head = {
            "id": completion_id(ctx.run_id),
            "object": "chat.completion.chunk",
            "created": created if created is not None else int(time.time()),
            "model": model,
        }
        # Every chunk is the same envelope around one delta: build it once, as a format the delta fills in.
        self._head = _json(head)[:-1]
        self._usage_null = b',"usage":null' if include_usage else b""
        envelope = b'%s,"choices":[{"index":0,"delta":%%s,"logprobs":null,"finish_reason":null}]%s}' % (
            self._head.replace(b"%", b"%%"),
            self._usage_null,
        )
        self._chunk_format = sse.frame_format(envelope, with_id=False)
        self._started = False
        self._ended = False
        self._tool_index: dict[str, int] = {}
        self._usage: UsageEvent | None = None

    def open(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk(b'{"role":"assistant","content":""}')

    def heartbeat(self) -> bytes:
        return sse.PING

    def prime(self, earlier: Sequence[StoredEvent]) -> None:
        """Catch up with the events a resuming client already has (tool call indexes), writing nothing."""
        self._started = True
        for item in earlier:
            self._frame(item.event)

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        frames = [self._frame(item.event) for item in batch]
        return b"".join(frames)

    def _chunk(self, delta: bytes) -> bytes:
        return self._chunk_format % delta

    def _frame(self, event: Event) -> bytes:
        if self._ended:
            return b""
        # Matching on the tag keeps the per-token path as fast as a type check, and narrows ``event`` all the same.
        match event.type:
            case "text-delta":
                return self._chunk(b'{"content":%s}' % _json(event.text))
            case "reasoning-delta":
                return self._chunk(b'{"reasoning_content":%s}' % _json(event.text))
            case "tool-call-start" | "tool-call-args-delta" | "tool-call-result":
                return self._tool_call(event)
            case "usage":
                self._usage = event
                return b""
            case "error":
                self._ended = True
                return sse.frame(_json(error_body(event.message, "server_error", event.code)))
            case "finish":
                self._ended = True
                name = finish_reason(event.reason)
                return self._held_calls() + self._finish(name) if name is not None else self._unfinished(event.reason)
            case "tool-approval-request":
                return self._approval_request(event)
            case "paused":
                self._ended = True
                return self._held_calls() + self._finish("tool_calls")
            case "metadata" | "tool-approval-response":
                # Not part of a Chat Completions stream: see the module's docstring.
                return b""
            case _:
                assert_never(event)

    def _approval_request(self, event: ToolApprovalRequest) -> bytes:
        if self._held is not None:
            self._held.pop(event.call_id, None)  # sent now, whole
        if event.call_id in self._tool_index:
            return b""  # streamed already
        index = self._tool_index[event.call_id] = len(self._tool_index)
        function = {"name": event.name, "arguments": event.arguments}
        call = {"index": index, "id": event.call_id, "type": "function", "function": function}
        return self._chunk(b'{"tool_calls":[%s]}' % _json(call))

    def _tool_call(self, event: ToolCallStart | ToolCallArgsDelta | ToolCallResult) -> bytes:
        match event.type:
            case "tool-call-start":
                return self._tool_call_start(event)
            case "tool-call-args-delta":
                return self._tool_call_args(event)
            case "tool-call-result":
                if self._held is not None:
                    self._held.pop(event.call_id, None)  # the backend ran it: not the client's to run
                return b""
            case _:
                assert_never(event)

    def _held_calls(self) -> bytes:
        """The calls held back that no result answered, each whole, as the turn ends."""
        if not self._held:
            return b""
        frames = []
        for call_id, (name, arguments) in self._held.items():
            index = self._tool_index[call_id] = len(self._tool_index)
            function = {"name": name, "arguments": "".join(arguments)}
            call = {"index": index, "id": call_id, "type": "function", "function": function}
            frames.append(self._chunk(b'{"tool_calls":[%s]}' % _json(call)))
        self._held = {}
        return b"".join(frames)

    def _tool_call_start(self, event: ToolCallStart) -> bytes:
        if self._held is not None:
            self._held[event.call_id] = (event.name, [])
            return b""
        index = self._tool_index[event.call_id] = len(self._tool_index)
        call = {
            "index": index,
            "id": event.call_id,
            "type": "function",
            "function": {"name": event.name, "arguments": ""},
        }
        return self._chunk(b'{"tool_calls":[%s]}' % _json(call))

    def _tool_call_args(self, event: ToolCallArgsDelta) -> bytes:
        if self._held is not None:
            if event.call_id in self._held:
                self._held[event.call_id][1].append(event.delta)
            return b""
        if event.call_id not in self._tool_index:
            return b""
        call = {"index": self._tool_index[event.call_id], "function": {"arguments": event.delta}}
        return self._chunk(b'{"tool_calls":[%s]}' % _json(call))

    def _unfinished(self, reason: FinishReason) -> bytes:
        error = _unfinished(reason)
        return sse.frame(_json(error_body(error.message, error.code, error.code)))

    def _finish(self, name: str) -> bytes:
        last = b'%s,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"%s"}]%s}' % (
            self._head,
            name.encode(),
            self._usage_null,
        )
        frames = [sse.frame(last)]
        if self._include_usage:
            frames.append(sse.frame(b'%s,"choices":[],"usage":%s}' % (self._head, _json(_usage(self._usage)))))
        frames.append(_DONE)
        return b"".join(frames)


class CompletionBuilder:
    """Folds a run's events into one ``chat.completion`` (the non-streaming response)."""

    def __init__(
        self, ctx: StreamContext, *, model: str, created: int | None = None, client_calls_only: bool = False
    ) -> None:
        self._client_calls_only = client_calls_only
        self._id = completion_id(ctx.run_id)
        self._model = model
        self._created = created if created is not None else int(time.time())
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[str, tuple[str, list[str]]] = {}
        self._usage: UsageEvent | None = None
        self.error: ErrorEvent | None = None
        self.reason: FinishReason | None = None
        self.paused = False  # the run paused for an approval: the completion ends there

    def add(self, event: Event) -> None:
        match event.type:
            case "text-delta":
                self._text.append(event.text)
            case "reasoning-delta":
                self._reasoning.append(event.text)
            case "tool-call-start" | "tool-call-args-delta" | "tool-call-result":
                self._tool_call(event)
            case "usage":
                self._usage = event
            case "error":
                self.error = self.error or event
            case "finish":
                self.reason = event.reason
                if finish_reason(event.reason) is None:
                    self.error = self.error or _unfinished(event.reason)  # refused, never a completion
            case "metadata":
                pass  # a completion's message has no place for it
            case _:
                self._approval(event)

    def _tool_call(self, event: ToolCallStart | ToolCallArgsDelta | ToolCallResult) -> None:
        match event.type:
            case "tool-call-start":
                self._calls[event.call_id] = (event.name, [])
            case "tool-call-args-delta":
                if event.call_id in self._calls:
                    self._calls[event.call_id][1].append(event.delta)
            case "tool-call-result":
                if self._client_calls_only:
                    self._calls.pop(event.call_id, None)  # the backend ran it: not the client's to run
            case _:
                assert_never(event)

    def _approval(self, event: ToolApprovalRequest | ToolApprovalResponse | RunPaused) -> None:
        match event.type:
            case "tool-approval-request":
                if event.call_id not in self._calls:
                    self._calls[event.call_id] = (event.name, [event.arguments])
            case "paused":
                self.reason = "tool_calls"  # the turn ends at the calls waiting for approval
                self.paused = True
            case "tool-approval-response":
                pass
            case _:
                assert_never(event)

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._text) or None, "refusal": None}
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if self._calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": "".join(args)}}
                for call_id, (name, args) in self._calls.items()
            ]
        return {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(self.reason or "stop"),
                }
            ],
            "usage": _usage(self._usage),
        }


class OpenAIChatProtocol:
    """``?protocol=openai``: Chat Completions chunks (without usage; ``/v1/chat/completions`` decides that)."""

    name: ClassVar[str] = "openai"
    media_type: ClassVar[str] = "text/event-stream"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, model: str) -> None:
        self.model = model

    def encoder(self, ctx: StreamContext) -> OpenAIChatEncoder:
        return OpenAIChatEncoder(ctx, model=self.model)
