"""``POST /api/runs/{run_id}/approvals``: a person's answer to a tool call that waits for approval.

The run is paused in the store (status ``waiting``, no instance holding it), so the answer may reach any instance,
any time before the run's approvals expire: the store records it atomically, and the instance that records the
last answer the run waited for drives the run on (see :meth:`tokenrelay.runs.RunManager.approve`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from tokenrelay.backends.base import ApprovalDecision
from tokenrelay.events import (
    Event,
    MetadataEvent,
    ReasoningDelta,
    RunPaused,
    TextDelta,
    ToolApprovalRequest,
    ToolApprovalResponse,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
)
from tokenrelay.messages import (
    MetadataPart,
    Part,
    PausedPart,
    ReasoningPart,
    TextPart,
    ToolApprovalPart,
    ToolCallPart,
    ToolResultPart,
)
from tokenrelay.server.openapi import ApprovalResult, errors, json_body, json_ok
from tokenrelay.server.pipeline import CurrentRelay, QueryUser, Refusal, authenticate, parse, read_json_object
from tokenrelay.server.relay import Relay
from tokenrelay.stores.base import DecisionResult, RunInfo, Suspension

__all__ = ["ApprovalRequest", "add_approval_routes", "answer_approval", "paused_log", "restore_from_history"]

log = logging.getLogger("tokenrelay.server")

_BODY_LIMIT = 64 * 1024


def paused_log(parts: Sequence[Part], pause_seq: int = 0) -> list[Event]:
    """A paused answer's log rebuilt from its parts (each text or reasoning part one delta), its pause last.

    With ``pause_seq``, the id the pause had, the pause keeps that id: empty text deltas before the first text (or
    at the start) make up for the deltas the parts joined, so the continuation comes under the ids its viewers
    expect. A viewer that saw the pause resumes from it exactly; one from an id before it gets the answer so far
    from its start (its text one delta), then the rest.
    """
    out = _events_of(parts)
    missing = pause_seq - len(out)
    if missing > 0:
        at = next((i for i, event in enumerate(out) if type(event) is TextDelta), 0)
        out[at:at] = [TextDelta("")] * missing
    return out


def _events_of(parts: Sequence[Part]) -> list[Event]:
    out: list[Event] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append(TextDelta(part.text))
        elif isinstance(part, ReasoningPart):
            out.append(ReasoningDelta(part.text))
        elif isinstance(part, ToolCallPart):
            out += [ToolCallStart(part.call_id, part.name), ToolCallArgsDelta(part.call_id, part.arguments)]
        elif isinstance(part, ToolResultPart):
            out.append(ToolCallResult(part.call_id, part.output, part.is_error))
        elif isinstance(part, MetadataPart):
            out.append(MetadataEvent(dict(part.data)))
        elif isinstance(part, ToolApprovalPart):
            out.append(ToolApprovalRequest(part.call_id, part.name, part.arguments))
            if part.approved is not None:
                out.append(ToolApprovalResponse(part.call_id, part.approved, part.reason))
        elif isinstance(part, PausedPart):
            out.append(RunPaused(part.expires_at))
    return out


async def restore_from_history(relay: Relay, run_id: str, user_id: str) -> bool:
    """A paused run the store does not have (an in-memory store restarted) but the history does: kept by the store
    again, its log rebuilt from the saved answer (its pause last, under the id it had), so it can be answered and
    go on."""
    if await relay.store.get(run_id) is not None:
        return False
    found = await relay.history.paused_answer(user_id, run_id)
    if found is None or not found[1].parts or not isinstance(found[1].parts[-1], PausedPart):
        return False
    conversation_id, message = found
    paused = message.parts[-1]
    assert isinstance(paused, PausedPart)
    # Only the calls of the last round wait: the ones after the previous pause that have no answer.
    after = max((i for i, p in enumerate(message.parts[:-1]) if isinstance(p, PausedPart)), default=-1)
    calls = tuple(
        ToolApprovalRequest(p.call_id, p.name, p.arguments)
        for p in message.parts[after + 1 :]
        if isinstance(p, ToolApprovalPart) and p.approved is None
    )
    info = RunInfo(run_id, user_id, conversation_id, paused.backend, message.created_at)
    suspension = Suspension(paused.state, paused.backend, paused.expires_at, calls)
    restored = await relay.store.restore_waiting(info, paused_log(message.parts, paused.seq), suspension)
    if restored:
        relay.metrics.run_restored()
        log.info("run %s: restored from the history, waiting for %d approval(s)", run_id, len(calls))
    return restored


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    tool_call_id: str = Field(min_length=1, max_length=256)
    approved: bool
    reason: str | None = Field(None, max_length=4096)


def add_approval_routes(router: APIRouter) -> None:
    router.add_api_route(
        "/api/runs/{run_id}/approvals",
        approve_tool_call,
        methods=["POST"],
        summary="Approve or deny a tool call the run waits for (on any instance)",
        responses={
            **json_ok(ApprovalResult, "Recorded; the run goes on once every call it waits for is answered"),
            **errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
        },
        openapi_extra=json_body(ApprovalRequest, description="the answer to one tool call"),
    )


async def approve_tool_call(request: Request, run_id: str, relay: CurrentRelay, user: QueryUser) -> Response:
    await authenticate(request)
    req = parse(ApprovalRequest, await read_json_object(request, _BODY_LIMIT))
    decision = ApprovalDecision(req.tool_call_id, req.approved, req.reason)
    result = await answer_approval(relay, run_id, user, decision)
    status = {"resume": "resumed", "recorded": "recorded"}.get(result.status, "unchanged")
    body = {"run_id": run_id, "tool_call_id": req.tool_call_id, "approved": req.approved, "status": status}
    return JSONResponse(body)


async def answer_approval(relay: Relay, run_id: str, user_id: str, decision: ApprovalDecision) -> DecisionResult:
    """Record ``decision``; the refusals of the HTTP API (404, 409) for what cannot be recorded."""
    await restore_from_history(relay, run_id, user_id)
    result = await relay.runs.approve(run_id, user_id, decision)
    if result.status == "unknown":
        raise Refusal(404, "not_found", f"run {run_id} has no tool call {decision.call_id!r} waiting for approval")
    if result.status == "expired":
        raise Refusal(404, "approval_expired", f"run {run_id}: the approval of {decision.call_id!r} expired")
    if result.status == "conflict":
        raise Refusal(409, "conflict", f"tool call {decision.call_id!r} was already answered otherwise")
    return result
