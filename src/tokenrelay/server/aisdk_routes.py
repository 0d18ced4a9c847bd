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
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenrelay.backends.base import Role
from tokenrelay.history.base import StoredMessage
from tokenrelay.protocols.aisdk import AISDK_HEADERS
from tokenrelay.runs import RunLimitError, RunNotFound
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.relay import Relay
from tokenrelay.server.routes import ID_PATTERN, error_response
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.stores.base import RunInfo

__all__ = ["UIMessage", "UseChatRequest", "create_aisdk_router", "message_text"]

# useChat sends the whole transcript with every message.
TRANSCRIPT_FACTOR = 64


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


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return error_response(422, "invalid_request", f"{field}: {first['msg']}", field)


def create_aisdk_router(relay: Relay, *, resolve_user: UserResolver | None = None) -> APIRouter:
    """useChat's two endpoints, bound to ``relay``; ``resolve_user`` defaults to the relay's, as for every route."""
    router = APIRouter()
    resolve_user = resolve_user or relay.resolve_user
    settings = relay.settings
    body_limit = settings.max_message_bytes * TRANSCRIPT_FACTOR

    async def respond(info: RunInfo, *, after: int) -> Response:
        stream = await relay.stream(info, after=after, protocol="ai-sdk")
        headers = {"x-run-id": info.run_id, "x-conversation-id": info.conversation_id, **AISDK_HEADERS}
        return SSEResponse(stream, headers=headers)

    @router.post("/api/chat", summary="useChat: answer the chat's last user message as a UI message stream")
    async def chat(request: Request, user_id: Annotated[str | None, Query()] = None) -> Response:
        raw = await request.body()
        if len(raw) > body_limit:
            return error_response(413, "body_too_large", f"request body: over {body_limit} bytes", "body")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, "invalid_json", f"body: not valid JSON ({exc})", "body")
        if not isinstance(data, dict):
            return error_response(422, "invalid_request", "body: must be a JSON object", "body")
        if user_id is not None and "user_id" not in data:
            data["user_id"] = user_id
        try:
            req = UseChatRequest.model_validate(data)
        except ValidationError as exc:
            return _validation_error(exc)
        last = req.messages[-1]
        if last.role != "user":
            return error_response(422, "invalid_request", "messages: the last message must be the user's", "messages")
        text = message_text(last)
        if not text.strip():
            return error_response(422, "invalid_request", "messages: the last message has no text", "messages")
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > settings.max_message_bytes:
            return error_response(
                413,
                "message_too_long",
                f"message: {size} bytes is over the limit of {settings.max_message_bytes}",
                "messages",
            )
        user = await resolve_user(request, req.user_id)
        if not await relay.history.load(user, req.id):
            await _adopt_transcript(relay, user, req.id, req.messages[:-1])
        try:
            info = await relay.start_chat(
                text, user_id=user, conversation_id=req.id, regenerate=req.trigger == "regenerate-message"
            )
        except RunLimitError as exc:
            response = error_response(503, "overloaded", str(exc))
            response.headers["retry-after"] = "1"
            return response
        await relay.chat_runs.set(user, req.id, info.run_id)
        return await respond(info, after=0)

    @router.get("/api/chat/{chat_id}/stream", summary="useChat resume: the chat's running answer, or 204")
    async def resume(
        request: Request,
        chat_id: str,
        user_id: Annotated[str | None, Query()] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        user = await resolve_user(request, user_id)
        run_id = await relay.chat_runs.get(user, chat_id)
        info = await relay.store.get(run_id) if run_id is not None else None
        if info is None or info.user_id != user or info.status == "finished":
            return Response(status_code=204)
        try:
            after = int(last_event_id) if last_event_id else 0
        except ValueError:
            return error_response(422, "invalid_request", "last_event_id: must be an integer", "last_event_id")
        try:
            return await respond(info, after=max(after, 0))
        except RunNotFound:
            return Response(status_code=204)

    return router


async def _adopt_transcript(relay: Relay, user_id: str, chat_id: str, messages: list[UIMessage]) -> None:
    """Make the client's earlier messages the chat's history (the server had none)."""
    now = time.time()
    for message in messages:
        text = message_text(message)
        if text:
            role: Role = message.role
            await relay.history.add(user_id, chat_id, StoredMessage(role, text, created_at=now))
