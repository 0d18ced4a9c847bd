"""The endpoints the Vercel AI SDK's ``useChat`` (with ``DefaultChatTransport``) talks to, unmodified.

- ``POST /api/chat`` takes useChat's body, ``{id, messages, trigger, messageId}``, and answers with the UI message
  stream (``x-vercel-ai-ui-message-stream: v1``). The chat ``id`` is the tokenrelay conversation id.
- ``GET /api/chat/{id}/stream`` is useChat's ``resume: true``: the chat's running answer, replayed from its start
  (``DefaultChatTransport`` expects a replay), or from after ``Last-Event-ID`` when a client sends one; 204 when
  nothing is running.

The server keeps the conversation, so only the last user message is new: the client's earlier messages are used
only when the server has no history for the chat yet (a first request, or a chat the client restored itself), and
then they become that history. ``trigger: "regenerate-message"`` asks the same question again: the earlier answer
leaves the model's context.

A run paused for a tool call's approval ends its response at the pause. useChat's ``addToolApprovalResponse`` (with
``sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses``) then sends the chat again, its last
message the assistant's with parts in state ``approval-responded``: those answers are recorded on the chat's run
(as ``POST /api/runs/{run_id}/approvals`` records them) and the response is the run's continuation after its pause.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route

from tokenrelay.backends.base import ApprovalDecision
from tokenrelay.errors import RunNotFound
from tokenrelay.messages import Message
from tokenrelay.server.approval_routes import answer_approval, restore_from_history
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.openapi import errors, event_stream, json_body
from tokenrelay.server.pipeline import (
    ID_PATTERN,
    Binding,
    CurrentRelay,
    QueryUser,
    Refusal,
    check_id,
    event_cursor,
    identify,
    owned_run,
    stream_response,
    stream_route,
)
from tokenrelay.server.relay import Relay
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.server.thread_routes import bound_router, last_pause, new_question, read_thread, start_thread_run

__all__ = ["UIMessage", "UseChatRequest", "aisdk_stream_routes", "create_aisdk_router", "message_text"]


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)


class UseChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=256, pattern=ID_PATTERN)
    messages: list[UIMessage] = Field(min_length=1)
    trigger: str | None = None
    user_id: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)


def message_text(message: UIMessage) -> str:
    """A UI message's text: its text parts, joined (files, tools, reasoning and data parts are not text)."""
    return "".join(str(p.get("text", "")) for p in message.parts if p.get("type") == "text")


def aisdk_stream_routes(binding: Binding) -> list[Route]:
    """useChat's two streams as plain ASGI routes (:func:`~tokenrelay.server.pipeline.stream_route`)."""
    return [
        stream_route("/api/chat", ["POST"], binding, _use_chat),
        stream_route("/api/chat/{chat_id}/stream", ["GET"], binding, _resume_chat),
    ]


def create_aisdk_router(
    relay: Relay, *, resolve_user: UserResolver | None = None, plain_streams: bool = False
) -> APIRouter:
    """useChat's two endpoints, bound to ``relay``; ``resolve_user`` defaults to the relay's, as for every route.
    ``plain_streams``: as :func:`~tokenrelay.server.routes.create_router`'s."""
    binding = Binding.of(relay, resolve_user)
    router = bound_router(binding, streams=aisdk_stream_routes(binding) if plain_streams else ())
    router.add_api_route(
        "/api/chat",
        use_chat,
        methods=["POST"],
        name="chat",
        summary="useChat: answer the chat's last user message as a UI message stream",
        response_class=SSEResponse,
        responses={
            **event_stream("The answer as a UI message stream, ending with [DONE]"),
            **errors(400, 401, 403, 408, 413, 415, 422, 503),
        },
        openapi_extra=json_body(UseChatRequest, description="useChat's request: the chat id and its messages"),
    )
    router.add_api_route(
        "/api/chat/{chat_id}/stream",
        resume_chat,
        methods=["GET"],
        name="resume",
        summary="useChat resume: the chat's running answer, or 204",
        response_class=SSEResponse,
        responses={**event_stream("The running answer, replayed", also=[204]), **errors(401, 422, 503)},
    )
    return router


async def use_chat(request: Request, relay: CurrentRelay, user_id: Annotated[str | None, Query()] = None) -> Response:
    req = await read_thread(request, relay, UseChatRequest, user_id)
    answers = _approval_answers(req.messages[-1])
    if answers:
        return await _continue(relay, req.id, await identify(request, req.user_id), answers)
    last = req.messages[-1]
    question = new_question(last.role, message_text(last), relay.settings.max_message_bytes)
    user = await identify(request, req.user_id)
    earlier = [Message(m.role, message_text(m)) for m in req.messages[:-1]]
    regenerate = req.trigger == "regenerate-message"
    return await start_thread_run(relay, user, req.id, question, earlier, protocol="ai-sdk", regenerate=regenerate)


async def resume_chat(
    chat_id: str,
    relay: CurrentRelay,
    user: QueryUser,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    run_id = await relay.chat_runs.get(user, check_id(chat_id, "chat_id"))
    info = await relay.store.get(run_id) if run_id is not None else None
    if info is None or info.user_id != user or info.status == "finished":
        return Response(status_code=204)
    after = event_cursor(last_event_id)
    try:
        return await stream_response(relay, info, after=max(after, 0), protocol="ai-sdk")
    except RunNotFound:
        return Response(status_code=204)  # it ended and expired in between: nothing is running


async def _use_chat(request: Request, relay: Relay) -> Response:
    return await use_chat(request, relay, request.query_params.get("user_id"))


async def _resume_chat(request: Request, relay: Relay) -> Response:
    user = await identify(request, request.query_params.get("user_id"))
    chat_id = request.path_params["chat_id"]
    return await resume_chat(chat_id, relay, user, request.headers.get("last-event-id"))


def _approval_answers(last: UIMessage) -> list[ApprovalDecision]:
    """The answers in an assistant message's tool parts that a person has just given (``approval-responded``)."""
    if last.role != "assistant":
        return []
    out: list[ApprovalDecision] = []
    for i, part in enumerate(last.parts):
        approval = part.get("approval")
        if part.get("state") != "approval-responded" or not isinstance(approval, dict):
            continue
        call_id, approved, reason = part.get("toolCallId"), approval.get("approved"), approval.get("reason")
        if not isinstance(call_id, str) or not call_id or not isinstance(approved, bool):
            field = f"messages.parts.{i}.approval"
            raise Refusal(422, "invalid_request", f"{field}: an approval needs a toolCallId and approved", field=field)
        out.append(ApprovalDecision(call_id, approved, reason if isinstance(reason, str) else None))
    return out


async def _continue(relay: Relay, chat_id: str, user: str, answers: list[ApprovalDecision]) -> Response:
    """Record the answers on the chat's paused run and stream what it says after its pause."""
    run_id = await relay.chat_runs.get(user, chat_id)
    if run_id is None:
        raise RunNotFound(chat_id)
    await restore_from_history(relay, run_id, user)
    info = await owned_run(relay, run_id, user)
    paused = await last_pause(relay, run_id) or 0  # before these answers: the continuation is what follows it
    for answer in answers:
        await answer_approval(relay, run_id, user, answer)
    return await stream_response(relay, info, after=paused, protocol="ai-sdk")
