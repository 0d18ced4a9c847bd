"""The endpoint AG-UI's ``HttpAgent`` (``@ag-ui/client``) talks to, unmodified: ``POST /api/ag-ui``.

It takes AG-UI's ``RunAgentInput`` (``threadId``, ``runId``, ``messages``, ``state``, ``tools``, ``context``,
``forwardedProps``, ``resume``) and answers with the AG-UI event stream of a normal tokenrelay run (see
:mod:`tokenrelay.protocols.agui`). The ``threadId`` is the conversation id. The server keeps the conversation, as for
useChat, so only the last (user) message is new: the client's earlier messages are used only when the server has
no history for the thread yet, and then they become it. The run is tokenrelay's own: ``RUN_STARTED.runId`` is its
id, which ``/api/runs/{id}/stream?protocol=ag-ui`` resumes and ``/api/runs/{id}/cancel`` stops; the client's
``runId`` only has to be there. Tools run on the server, so the input's ``tools``, ``context`` and ``state`` are
not used.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route

from tokenrelay.backends.base import ApprovalDecision
from tokenrelay.messages import Message, Role
from tokenrelay.server.approval_routes import answer_approval
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.openapi import ErrorBody, errors, event_stream, json_body
from tokenrelay.server.pipeline import (
    ID_PATTERN,
    Binding,
    CurrentRelay,
    Refusal,
    identify,
    stream_response,
    stream_route,
)
from tokenrelay.server.relay import Relay
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.server.thread_routes import bound_router, last_pause, new_question, read_thread, start_thread_run

__all__ = ["AGUIMessage", "AGUIRunInput", "ResumeEntry", "agui_stream_routes", "create_agui_router", "message_text"]

_CONFIG = ConfigDict(extra="ignore", populate_by_name=True)


class AGUIMessage(BaseModel):
    """One message of the thread, as the client holds it (only its role and text are read)."""

    model_config = _CONFIG

    id: str
    role: Literal["developer", "system", "assistant", "user", "tool", "activity", "reasoning"]
    # A string, a list of content parts (user and tool messages), or absent (an assistant's tool calls only).
    content: str | list[dict[str, Any]] | dict[str, Any] | None = None


class ResumeEntry(BaseModel):
    """The answer to an interrupt of the run before (a tool approval: ``payload`` ``{"approved", "reason"?}``)."""

    model_config = _CONFIG

    interrupt_id: str = Field(alias="interruptId", min_length=1)
    status: Literal["resolved", "cancelled"]
    payload: Any = None


class AGUIRunInput(BaseModel):
    """AG-UI's ``RunAgentInput``."""

    model_config = _CONFIG

    thread_id: str = Field(alias="threadId", min_length=1, max_length=256, pattern=ID_PATTERN)
    run_id: str = Field(alias="runId", min_length=1, max_length=256)
    messages: list[AGUIMessage]
    state: Any = None
    tools: list[dict[str, Any]] | None = None
    context: list[dict[str, Any]] | None = None
    forwarded_props: Any = Field(None, alias="forwardedProps")
    resume: list[ResumeEntry] | None = None
    user_id: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)


_ROLES: dict[str, Role] = {"developer": "system", "system": "system", "assistant": "assistant", "user": "user"}


def message_text(message: AGUIMessage) -> str:
    """A message's text: its content string, or its text parts joined (media parts are not text)."""
    content = message.content
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return ""


def agui_stream_routes(binding: Binding) -> list[Route]:
    """AG-UI's endpoint as a plain ASGI route (:func:`~tokenrelay.server.pipeline.stream_route`)."""
    return [stream_route("/api/ag-ui", ["POST"], binding, _run_agent)]


def create_agui_router(
    relay: Relay, *, resolve_user: UserResolver | None = None, plain_streams: bool = False
) -> APIRouter:
    """AG-UI's endpoint, bound to ``relay``; ``resolve_user`` defaults to the relay's, as for every route;
    ``plain_streams``: as :func:`~tokenrelay.server.routes.create_router`'s."""
    binding = Binding.of(relay, resolve_user)
    router = bound_router(binding, streams=agui_stream_routes(binding) if plain_streams else ())
    router.add_api_route(
        "/api/ag-ui",
        run_agent,
        methods=["POST"],
        name="ag-ui",
        summary="AG-UI: answer the thread's last user message as an AG-UI event stream",
        response_class=SSEResponse,
        responses={
            **event_stream("The run as AG-UI events, from RUN_STARTED to RUN_FINISHED or RUN_ERROR"),
            **errors(400, 401, 403, 404, 408, 413, 415, 422, 503),
            409: {"model": ErrorBody, "description": "A resume entry answers a tool call otherwise than it was"},
        },
        openapi_extra=json_body(AGUIRunInput, description="AG-UI's RunAgentInput"),
    )
    return router


async def run_agent(request: Request, relay: CurrentRelay, user_id: Annotated[str | None, Query()] = None) -> Response:
    req = await read_thread(request, relay, AGUIRunInput, user_id)
    user = await identify(request, req.user_id)
    if req.resume:
        return await _resume(relay, user, req.thread_id, req.resume)
    question = _question(req, relay.settings.max_message_bytes)
    earlier = [
        Message(_ROLES[m.role], message_text(m)) for m in req.messages[:-1] if m.role in _ROLES and message_text(m)
    ]
    return await start_thread_run(relay, user, req.thread_id, question, earlier, protocol="ag-ui")


async def _run_agent(request: Request, relay: Relay) -> Response:
    return await run_agent(request, relay, request.query_params.get("user_id"))


async def _resume(relay: Relay, user: str, thread_id: str, entries: list[ResumeEntry]) -> Response:
    """Answer the interrupts the thread's run paused at, and stream the same run going on from its pause."""
    decisions = [_decision(entry, i) for i, entry in enumerate(entries)]
    run_id = await relay.chat_runs.get(user, thread_id)
    info = await relay.store.get(run_id) if run_id is not None else None
    pause = await last_pause(relay, info.run_id) if info is not None and info.user_id == user else None
    if info is None or pause is None:
        raise Refusal(404, "not_found", f"thread {thread_id} has no interrupt to answer", field="resume")
    for decision in decisions:
        await answer_approval(relay, info.run_id, user, decision)  # 404 for an unknown call, 409 for a conflict
    return await stream_response(relay, info, after=pause, protocol="ag-ui")


def _decision(entry: ResumeEntry, i: int) -> ApprovalDecision:
    """A resume entry as an approval: ``resolved`` with ``payload`` ``{"approved", "reason"?}`` (or a bare
    boolean), or ``cancelled``, which denies the call."""
    if entry.status == "cancelled":
        return ApprovalDecision(entry.interrupt_id, False, "cancelled")
    payload = entry.payload
    if isinstance(payload, bool):
        return ApprovalDecision(entry.interrupt_id, payload)
    if isinstance(payload, dict) and isinstance(payload.get("approved"), bool):
        reason = payload.get("reason")
        if reason is None or isinstance(reason, str):
            return ApprovalDecision(entry.interrupt_id, payload["approved"], reason)
    field = f"resume.{i}.payload"
    raise Refusal(422, "invalid_request", f'{field}: must be {{"approved": boolean, "reason"?: string}}', field=field)


def _question(req: AGUIRunInput, limit: int) -> str:
    """The thread's new question: the text of its last message, which must be the user's."""
    if not req.messages:
        raise Refusal(422, "invalid_request", "messages: must hold the user's message", field="messages")
    last = req.messages[-1]
    return new_question(last.role, message_text(last), limit)
