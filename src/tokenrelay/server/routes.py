"""The HTTP API as a mountable ``APIRouter``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenrelay.runs import RunLimitError, RunNotFound
from tokenrelay.server.auth import UserResolver, anonymous_or_claimed
from tokenrelay.server.relay import Relay
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.stores.base import RunInfo

__all__ = ["ChatRequest", "UserResolver", "anonymous_or_claimed", "create_router", "error_response"]

ID_PATTERN = r"^[A-Za-z0-9_.:@-]+$"


class ChatRequest(BaseModel):
    # strict: a number where a string belongs is an error, not silently coerced.
    model_config = ConfigDict(strict=True, extra="ignore")

    message: str
    user_id: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)
    conversation_id: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)
    # Ask the last question again (retry, regenerate): the earlier answer leaves the model's context.
    regenerate: bool = False


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return JSONResponse({"error": error}, status_code=status)


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return error_response(422, "invalid_request", f"{field}: {first['msg']}", field)


def create_router(relay: Relay, *, resolve_user: UserResolver | None = None) -> APIRouter:
    """The API routes, bound to ``relay``.

    ``resolve_user`` decides who a request acts as (default: the relay's, from its settings: bearer tokens if
    configured, else the client's own ``user_id``). It may raise ``server.auth.AuthError`` to refuse a request.
    A run or conversation of another user is answered 404, as if it did not exist, on every route.
    """
    router = APIRouter()
    resolve_user = resolve_user or relay.resolve_user
    settings = relay.settings
    body_limit = settings.max_message_bytes * 6 + 4096  # JSON escaping can grow a message up to 6x

    def check_message(message: str) -> JSONResponse | None:
        if not message.strip():
            return error_response(422, "invalid_request", "message: must not be empty or blank", "message")
        size = len(message.encode("utf-8", "surrogatepass"))
        if size > settings.max_message_bytes:
            return error_response(
                413,
                "message_too_long",
                f"message: {size} bytes is over the limit of {settings.max_message_bytes}",
                "message",
            )
        return None

    def pick_protocol(request: Request) -> str | JSONResponse:
        """``?protocol=`` chooses the wire format of this one stream (``seed``, ``ai-sdk``, ``openai``)."""
        name = request.query_params.get("protocol") or "seed"
        if name not in relay.protocols:
            known = ", ".join(relay.protocols)
            return error_response(422, "invalid_request", f"protocol: must be one of {known}", "protocol")
        return name

    async def start(req: ChatRequest, request: Request) -> Response:
        if (bad := check_message(req.message)) is not None:
            return bad
        if isinstance(protocol := pick_protocol(request), JSONResponse):
            return protocol
        user_id = await resolve_user(request, req.user_id)
        try:
            info = await relay.start_chat(
                req.message, user_id=user_id, conversation_id=req.conversation_id, regenerate=req.regenerate
            )
        except RunLimitError as exc:
            response = error_response(503, "overloaded", str(exc))
            response.headers["retry-after"] = "1"
            return response
        return await respond(info, after=0, protocol=protocol)

    async def respond(info: RunInfo, *, after: int, protocol: str = "seed") -> Response:
        stream = await relay.stream(info, after=after, protocol=protocol)
        wire = relay.protocols[protocol]
        headers = {"x-run-id": info.run_id, "x-conversation-id": info.conversation_id, **wire.headers}
        return SSEResponse(stream, media_type=wire.media_type, headers=headers)

    @router.post("/api/chat/stream", summary="Answer a message as a stream of Server-Sent Events")
    async def chat_stream_post(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > body_limit:
            return error_response(413, "body_too_large", f"request body: over {body_limit} bytes", "body")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, "invalid_json", f"body: not valid JSON ({exc})", "body")
        if not isinstance(data, dict):
            return error_response(422, "invalid_request", "body: must be a JSON object", "body")
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as exc:
            return _validation_error(exc)
        return await start(req, request)

    @router.get("/api/chat/stream", summary="The same stream, for EventSource")
    async def chat_stream_get(
        request: Request,
        message: Annotated[str | None, Query()] = None,
        user_id: Annotated[str | None, Query()] = None,
        conversation_id: Annotated[str | None, Query()] = None,
        run_id: Annotated[str | None, Query()] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        if last_event_id is not None:
            # An EventSource reconnecting by itself: resume the run named in the URL if there is one, and never
            # start the same message a second time. 204 tells EventSource to stop reconnecting.
            if run_id is None:
                return Response(status_code=204)
            return await resume(request, run_id, last_event_id, None, user_id)
        try:
            req = ChatRequest.model_validate(
                {"message": message, "user_id": user_id, "conversation_id": conversation_id}
            )
        except ValidationError as exc:
            return _validation_error(exc)
        return await start(req, request)

    async def resume(
        request: Request, run_id: str, header_id: str | None, query_id: str | None, claimed: str | None
    ) -> Response:
        user_id = await resolve_user(request, claimed)
        info = await relay.store.get(run_id)
        if info is None or info.user_id != user_id:
            return error_response(404, "run_not_found", f"run {run_id} is unknown or expired")
        cursor = header_id if header_id is not None else query_id
        try:
            after = int(cursor) if cursor not in (None, "") else 0
        except ValueError:
            return error_response(422, "invalid_request", "last_event_id: must be an integer", "last_event_id")
        if after < 0:
            return error_response(422, "invalid_request", "last_event_id: must be >= 0", "last_event_id")
        if info.status == "finished" and after >= info.last_seq:
            return Response(status_code=204)
        if isinstance(protocol := pick_protocol(request), JSONResponse):
            return protocol
        try:
            return await respond(info, after=after, protocol=protocol)
        except RunNotFound:
            return error_response(404, "run_not_found", f"run {run_id} is unknown or expired")

    @router.get("/api/runs/{run_id}/stream", summary="Resume a run's stream after an event id")
    async def run_stream(
        request: Request,
        run_id: str,
        last_event_id: Annotated[str | None, Header()] = None,
        last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
        user_id: Annotated[str | None, Query()] = None,
    ) -> Response:
        return await resume(request, run_id, last_event_id, last_event_id_query, user_id)

    @router.post("/api/runs/{run_id}/cancel", summary="Stop a run (on whichever instance runs it)")
    async def cancel_run(request: Request, run_id: str, user_id: Annotated[str | None, Query()] = None) -> Response:
        user = await resolve_user(request, user_id)
        info = await relay.store.get(run_id)
        if info is None or info.user_id != user:
            return error_response(404, "run_not_found", f"run {run_id} is unknown or expired")
        cancelled = await relay.runs.cancel(run_id)
        return JSONResponse({"run_id": run_id, "cancelled": cancelled})

    @router.get("/api/conversations", summary="The user's conversations, most recent first")
    async def list_conversations(
        request: Request,
        user_id: Annotated[str | None, Query()] = None,
        limit: Annotated[str | None, Query()] = None,
    ) -> Response:
        user = await resolve_user(request, user_id)
        try:
            count = int(limit) if limit is not None else 50
        except ValueError:
            count = 0
        if not 1 <= count <= 500:
            return error_response(422, "invalid_request", "limit: must be an integer from 1 to 500", "limit")
        items = await relay.history.conversations(user, limit=count)
        return JSONResponse(
            {
                "conversations": [
                    {"id": c.id, "title": c.title, "created_at": c.created_at, "updated_at": c.updated_at}
                    for c in items
                ]
            }
        )

    @router.get("/api/conversations/{conversation_id}/messages", summary="A conversation's messages, oldest first")
    async def conversation_messages(
        request: Request, conversation_id: str, user_id: Annotated[str | None, Query()] = None
    ) -> Response:
        user = await resolve_user(request, user_id)
        stored = await relay.history.load(user, conversation_id)
        if not stored:
            return error_response(404, "conversation_not_found", f"conversation {conversation_id} is unknown")
        return JSONResponse(
            {
                "conversation_id": conversation_id,
                "messages": [
                    {
                        "role": m.role,
                        "content": m.content,
                        "status": m.status,
                        "run_id": m.run_id,
                        "error_code": m.error_code,
                        "created_at": m.created_at,
                    }
                    for m in stored
                ],
            }
        )

    @router.delete("/api/conversations/{conversation_id}", summary="Delete a conversation and its messages")
    async def delete_conversation(
        request: Request, conversation_id: str, user_id: Annotated[str | None, Query()] = None
    ) -> Response:
        user = await resolve_user(request, user_id)
        if not await relay.history.delete(user, conversation_id):
            return error_response(404, "conversation_not_found", f"conversation {conversation_id} is unknown")
        return Response(status_code=204)

    @router.get("/api/health", summary="Liveness and load")
    async def health() -> dict[str, Any]:
        return relay.health()

    # The clients' own protocols: useChat's endpoints and the OpenAI-compatible API (they import this module).
    from tokenrelay.server.aisdk_routes import create_aisdk_router
    from tokenrelay.server.openai_routes import create_openai_router

    router.include_router(create_aisdk_router(relay, resolve_user=resolve_user))
    router.include_router(create_openai_router(relay, resolve_user=resolve_user))
    return router
