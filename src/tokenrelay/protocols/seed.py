"""The seed protocol: ``data: {"delta": "..."}`` per delta, ``data: {"done": true, ...}`` last.

The JSON is written exactly as Python's ``json.dumps`` writes it (``{"delta": "Hi"}``, ASCII-escaped), so a client
written against the original FastAPI ``StreamingResponse`` recipe sees the same bytes after the ``id:`` line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar

from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    MetadataEvent,
    ReasoningDelta,
    StoredEvent,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.protocols.base import StreamContext

__all__ = ["SeedEncoder", "SeedProtocol", "seed_frame"]

HEARTBEAT = b": ping\n\n"


def seed_frame(seq: int, payload: dict[str, Any]) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (seq, json.dumps(payload).encode())


class SeedEncoder:
    __slots__ = ("_ctx", "_usage")
    sse_retry: ClassVar[bool] = True

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._usage: dict[str, int | None] | None = None

    def open(self) -> bytes:
        return b""

    def prime(self, earlier: Sequence[StoredEvent]) -> None:
        # A resume after the usage event must still carry the usage in its done frame.
        for item in earlier:
            if isinstance(item.event, UsageEvent):
                self._usage = {"input_tokens": item.event.input_tokens, "output_tokens": item.event.output_tokens}

    def heartbeat(self) -> bytes:
        return HEARTBEAT

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        out: list[bytes] = []
        for item in batch:
            event = item.event
            if type(event) is TextDelta:
                # The hot path: encode_basestring_ascii is the C routine json.dumps itself uses for strings.
                out.append(
                    b'id: %d\ndata: {"delta": %s}\n\n' % (item.seq, encode_basestring_ascii(event.text).encode())
                )
            elif isinstance(event, FinishEvent):
                done: dict[str, Any] = {
                    "done": True,
                    "finish_reason": event.reason,
                    "run_id": self._ctx.run_id,
                    "conversation_id": self._ctx.conversation_id,
                }
                if self._usage is not None:
                    done["usage"] = self._usage
                out.append(seed_frame(item.seq, done))
            elif isinstance(event, UsageEvent):
                self._usage = {"input_tokens": event.input_tokens, "output_tokens": event.output_tokens}
            elif isinstance(event, ErrorEvent):
                error: dict[str, Any] = {"code": event.code, "message": event.message, "retryable": event.retryable}
                if event.retry_after is not None:
                    error["retry_after"] = event.retry_after
                out.append(seed_frame(item.seq, {"error": error}))
            elif isinstance(event, ReasoningDelta):
                out.append(seed_frame(item.seq, {"reasoning": event.text}))
            elif isinstance(event, ToolCallStart):
                out.append(seed_frame(item.seq, {"tool_call": {"id": event.call_id, "name": event.name}}))
            elif isinstance(event, ToolCallArgsDelta):
                out.append(seed_frame(item.seq, {"tool_call_delta": {"id": event.call_id, "arguments": event.delta}}))
            elif isinstance(event, ToolCallResult):
                result = {"id": event.call_id, "output": event.output, "is_error": event.is_error}
                out.append(seed_frame(item.seq, {"tool_result": result}))
            elif isinstance(event, MetadataEvent):
                out.append(seed_frame(item.seq, {"metadata": event.data}))
        return b"".join(out)


class SeedProtocol:
    name: ClassVar[str] = "seed"
    media_type: ClassVar[str] = "text/event-stream"
    headers: ClassVar[dict[str, str]] = {}

    def encoder(self, ctx: StreamContext) -> SeedEncoder:
        return SeedEncoder(ctx)
