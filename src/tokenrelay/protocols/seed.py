"""The seed protocol: ``data: {"delta": "..."}`` per delta, ``data: {"done": true, ...}`` last.

The JSON is written exactly as Python's ``json.dumps`` writes it (``{"delta": "Hi"}``, ASCII-escaped), so a client
written against the original FastAPI ``StreamingResponse`` recipe sees the same bytes after the ``id:`` line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar, assert_never

from tokenrelay import sse
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    RunPaused,
    StoredEvent,
    ToolApprovalRequest,
    ToolApprovalResponse,
    UsageEvent,
)
from tokenrelay.protocols.base import StreamContext

__all__ = ["SeedEncoder", "SeedProtocol", "seed_frame"]

# The per-token frame, formatted in one step: the id, then the delta's JSON string.
_DELTA_FRAME = sse.frame_format(b'{"delta": %s}')


def seed_frame(seq: int, payload: dict[str, Any]) -> bytes:
    """One seed frame: ``payload`` as ``json.dumps`` writes it, with the event's id."""
    return sse.frame(json.dumps(payload).encode(), seq)


def _usage(event: UsageEvent) -> dict[str, int | None]:
    return {"input_tokens": event.input_tokens, "output_tokens": event.output_tokens}


def _error(event: ErrorEvent) -> dict[str, Any]:
    error: dict[str, Any] = {"code": event.code, "message": event.message, "retryable": event.retryable}
    if event.retry_after is not None:
        error["retry_after"] = event.retry_after
    return {"error": error}


def _approval(event: ToolApprovalRequest | ToolApprovalResponse | RunPaused) -> dict[str, Any]:
    match event.type:
        case "tool-approval-request":
            return {"approval_request": {"id": event.call_id, "name": event.name, "arguments": event.arguments}}
        case "tool-approval-response":
            return {"approval": {"id": event.call_id, "approved": event.approved, "reason": event.reason}}
        case "paused":
            return {"paused": {"expires_at": event.expires_at}}
        case _:
            assert_never(event)


class SeedEncoder:
    """The seed's frames. A paused run's stream stays open (heartbeats) and goes on when the run is resumed."""

    __slots__ = ("_ctx", "_usage")
    sse_retry: ClassVar[bool] = True
    ends_at_pause: ClassVar[bool] = False

    def __init__(self, ctx: StreamContext) -> None:
        self._ctx = ctx
        self._usage: dict[str, int | None] | None = None

    def open(self) -> bytes:
        return b""

    def prime(self, earlier: Sequence[StoredEvent]) -> None:
        # A resume after the usage event must still carry the usage in its done frame.
        for item in earlier:
            if isinstance(item.event, UsageEvent):
                self._usage = _usage(item.event)

    def heartbeat(self) -> bytes:
        return sse.PING

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        out: list[bytes] = []
        for item in batch:
            event = item.event
            # Matching on the tag rather than on the class keeps the per-token path as fast as a type check, and
            # narrows ``event`` all the same.
            match event.type:
                case "text-delta":
                    # The hot path: encode_basestring_ascii is the C routine json.dumps itself uses for strings.
                    out.append(_DELTA_FRAME % (item.seq, encode_basestring_ascii(event.text).encode()))
                case "usage":
                    self._usage = _usage(event)
                case "finish":
                    out.append(seed_frame(item.seq, self._done(event)))
                case "error":
                    out.append(seed_frame(item.seq, _error(event)))
                case "reasoning-delta":
                    out.append(seed_frame(item.seq, {"reasoning": event.text}))
                case "tool-call-start":
                    out.append(seed_frame(item.seq, {"tool_call": {"id": event.call_id, "name": event.name}}))
                case "tool-call-args-delta":
                    delta = {"id": event.call_id, "arguments": event.delta}
                    out.append(seed_frame(item.seq, {"tool_call_delta": delta}))
                case "tool-call-result":
                    result = {"id": event.call_id, "output": event.output, "is_error": event.is_error}
                    out.append(seed_frame(item.seq, {"tool_result": result}))
                case "metadata":
                    out.append(seed_frame(item.seq, {"metadata": event.data}))
                case _:
                    out.append(seed_frame(item.seq, _approval(event)))
        return b"".join(out)

    def _done(self, event: FinishEvent) -> dict[str, Any]:
        done: dict[str, Any] = {
            "done": True,
            "finish_reason": event.reason,
            "run_id": self._ctx.run_id,
            "conversation_id": self._ctx.conversation_id,
        }
        if self._usage is not None:
            done["usage"] = self._usage
        if event.saved is False:
            # Only when saving failed: a frame for a saved answer stays byte for byte what it always was.
            done["saved"] = False
        return done


class SeedProtocol:
    """The default protocol: the seed's ``{"delta"}`` / ``{"done"}`` frames, with the run's ids."""

    name: ClassVar[str] = "seed"
    media_type: ClassVar[str] = "text/event-stream"
    headers: ClassVar[dict[str, str]] = {}

    def encoder(self, ctx: StreamContext) -> SeedEncoder:
        return SeedEncoder(ctx)
