"""The HTTP API as a mountable ``APIRouter``: tokenrelay's own routes, and the clients' protocols beside them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route

from tokenrelay.history.wire import messages_body
from tokenrelay.server.agui_routes import agui_stream_routes, create_agui_router
from tokenrelay.server.aisdk_routes import aisdk_stream_routes, create_aisdk_router
from tokenrelay.server.approval_routes import add_approval_routes
from tokenrelay.server.auth import UserResolver, anonymous_or_claimed
from tokenrelay.server.openai_routes import create_openai_router, openai_stream_routes
from tokenrelay.server.openapi import (
    CancelResult,
    ConversationList,
    ConversationMessages,
    ErrorBody,
    Health,
    errors,
    event_stream,
    json_body,
    json_ok,
    query_parameter,
)
from tokenrelay.server.pipeline import (
    ID_PATTERN,
    Binding,
    CurrentRelay,
    QueryUser,
    Refusal,
    authenticate,
    check_id,
    check_size,
    check_text,
    error_response,
    event_cursor,
    identify,
    owned_run,
    parse,
    read_json_object,
    stream_response,
    stream_route,
)
from tokenrelay.server.relay import Relay
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.server.thread_routes import bound_router

__all__ = ["ChatRequest", "UserResolver", "anonymous_or_claimed", "create_router", "error_response", "stream_routes"]


class ChatRequest(BaseModel):
    # strict: a number where a string belongs is an error, not silently coerced.
    model_config = ConfigDict(strict=True, extra="ignore")

    message: str
    user_id: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)
    conversation_id: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)
    # Ask the last question again (retry, regenerate): the earlier answer leaves the model's context.
    regenerate: bool = False


def stream_routes(binding: Binding) -> list[Route]:
    """Every stream of :func:`create_router` as a plain ASGI route (:func:`~tokenrelay.server.pipeline.stream_route`):
    the seed's, useChat's, OpenAI's Chat Completions and AG-UI's."""
    return [
        stream_route("/api/chat/stream", ["POST"], binding, chat_stream_post),
        stream_route("/api/chat/stream", ["GET"], binding, _get_stream),
        stream_route("/api/runs/{run_id}/stream", ["GET"], binding, _run_stream),
        *aisdk_stream_routes(binding),
        *openai_stream_routes(binding),
        *agui_stream_routes(binding),
    ]


def create_router(relay: Relay, *, resolve_user: UserResolver | None = None, plain_streams: bool = False) -> APIRouter:
    """The API routes, bound to ``relay``.

    ``resolve_user`` decides who a request acts as (default: the relay's, from its settings: bearer tokens if
    configured, else the client's own ``user_id``). It may raise ``server.auth.AuthError`` to refuse a request.
    A run or conversation of another user is answered 404, as if it did not exist, on every route.

    ``plain_streams`` serves the stream routes (:func:`stream_routes`) as plain ASGI ahead of their FastAPI routes (see
    :func:`~tokenrelay.server.pipeline.stream_route`): what :func:`~tokenrelay.server.create_app` does. Not for a
    router mounted in another app: dependencies given to ``include_router`` would not apply to those routes.
    """
    binding = Binding.of(relay, resolve_user)
    resolve_user = binding.resolve_user
    # The streams themselves are served as plain ASGI ahead of their documented routes (below, for the OpenAPI
    # document), the same handlers with the same refusals: FastAPI's request machinery would otherwise be held for
    # as long as each stream lasts, which is most of what a stream costs beyond its connection.
    router = bound_router(binding, streams=stream_routes(binding) if plain_streams else ())
    protocol = query_parameter("protocol", "the stream's wire format (default seed)", list(relay.protocols))
    router.add_api_route(
        "/api/chat/stream",
        chat_stream_post,
        methods=["POST"],
        summary="Answer a message as a stream of Server-Sent Events",
        response_class=SSEResponse,
        responses={
            **event_stream("The run's events as Server-Sent Events, then the done frame"),
            **errors(400, 401, 403, 408, 413, 415, 422, 503),
        },
        openapi_extra=json_body(ChatRequest, description="the user's message", parameters=[protocol]),
    )
    resumed = event_stream("The run's events after Last-Event-ID, then the done frame", also=[204])
    router.add_api_route(
        "/api/chat/stream",
        chat_stream_get,
        methods=["GET"],
        summary="The same stream, for EventSource",
        response_class=SSEResponse,
        responses={**resumed, **errors(401, 404, 413, 422, 503)},
        openapi_extra={"parameters": [protocol]},
    )
    router.add_api_route(
        "/api/runs/{run_id}/stream",
        run_stream,
        methods=["GET"],
        summary="Resume a run's stream after an event id",
        response_class=SSEResponse,
        responses={**resumed, **errors(401, 404, 422, 503)},
        openapi_extra={"parameters": [protocol]},
    )
    _add_state_routes(router)
    add_approval_routes(router)
    # The clients' own protocols: useChat's endpoints and the OpenAI-compatible API.
    router.include_router(create_aisdk_router(relay, resolve_user=resolve_user))  # (its streams are in stream_routes)
    router.include_router(create_openai_router(relay, resolve_user=resolve_user))
    router.include_router(create_agui_router(relay, resolve_user=resolve_user))
    return router


def _add_state_routes(router: APIRouter) -> None:
    """The routes that are not streams: cancel, conversations, health."""
    router.add_api_route(
        "/api/runs/{run_id}/cancel",
        cancel_run,
        methods=["POST"],
        summary="Stop a run (on whichever instance runs it)",
        responses={**json_ok(CancelResult, "Whether the run was stopped"), **errors(401, 403, 404, 415, 422, 503)},
    )
    router.add_api_route(
        "/api/conversations",
        list_conversations,
        methods=["GET"],
        summary="The user's conversations, most recent first",
        responses={**json_ok(ConversationList, "The conversations"), **errors(401, 422, 503)},
    )
    router.add_api_route(
        "/api/conversations/{conversation_id}/messages",
        conversation_messages,
        methods=["GET"],
        summary="A conversation's messages, oldest first",
        responses={**json_ok(ConversationMessages, "The messages"), **errors(401, 404, 422, 503)},
    )
    router.add_api_route(
        "/api/conversations/{conversation_id}",
        delete_conversation,
        methods=["DELETE"],
        summary="Delete a conversation and its messages",
        status_code=204,
        responses={204: {"description": "Deleted, its runs cancelled"}, **errors(401, 403, 404, 415, 422, 503)},
    )
    router.add_api_route(
        "/api/health",
        health,
        methods=["GET"],
        summary="Liveness and load",
        responses={
            **errors(),
            **json_ok(Health, "Up, and every dependency answers"),
            # The report itself, or the edge's refusal when the instance is at its connection cap.
            503: {"model": Health | ErrorBody, "description": "A dependency is down (the report says which)"},
        },
    )


async def chat_stream_post(request: Request, relay: CurrentRelay) -> Response:
    body_limit = relay.settings.max_message_bytes * 6 + 4096  # JSON escaping can grow a message up to 6x
    await authenticate(request)
    return await _start(request, relay, parse(ChatRequest, await read_json_object(request, body_limit)))


async def chat_stream_get(
    request: Request,
    relay: CurrentRelay,
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
        return await _resume(request, relay, run_id, await identify(request, user_id), last_event_id)
    req = parse(ChatRequest, {"message": message, "user_id": user_id, "conversation_id": conversation_id})
    return await _start(request, relay, req)


async def run_stream(
    request: Request,
    run_id: str,
    relay: CurrentRelay,
    user: QueryUser,
    last_event_id: Annotated[str | None, Header()] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> Response:
    cursor = last_event_id if last_event_id is not None else last_event_id_query
    return await _resume(request, relay, run_id, user, cursor)


# The stream routes as plain ASGI (``stream_route``): their parameters, as FastAPI reads them for the routes above.


async def _get_stream(request: Request, relay: Relay) -> Response:
    query = request.query_params
    return await chat_stream_get(
        request,
        relay,
        query.get("message"),
        query.get("user_id"),
        query.get("conversation_id"),
        query.get("run_id"),
        request.headers.get("last-event-id"),
    )


async def _run_stream(request: Request, relay: Relay) -> Response:
    query = request.query_params
    user = await identify(request, query.get("user_id"))
    run_id = request.path_params["run_id"]
    header = request.headers.get("last-event-id")
    return await run_stream(request, run_id, relay, user, header, query.get("last_event_id"))


async def cancel_run(run_id: str, relay: CurrentRelay, user: QueryUser) -> Response:
    await owned_run(relay, run_id, user)
    cancelled = await relay.runs.cancel(run_id)
    return JSONResponse({"run_id": run_id, "cancelled": cancelled})


def _conversation_limit(limit: Annotated[str | None, Query()] = None) -> int:
    """``?limit=``: how many conversations to list, 1 to 500 (50 when absent)."""
    try:
        count = int(limit) if limit is not None else 50
    except ValueError:
        count = 0
    if not 1 <= count <= 500:
        raise Refusal(422, "invalid_request", "limit: must be an integer from 1 to 500", field="limit")
    return count


async def list_conversations(
    relay: CurrentRelay, user: QueryUser, count: Annotated[int, Depends(_conversation_limit)]
) -> Response:
    items = await relay.history.conversations(user, limit=count)
    return JSONResponse(
        {
            "conversations": [
                {"id": c.id, "title": c.title, "created_at": c.created_at, "updated_at": c.updated_at} for c in items
            ]
        }
    )


async def conversation_messages(conversation_id: str, relay: CurrentRelay, user: QueryUser) -> Response:
    stored = await relay.history.load(user, check_id(conversation_id, "conversation_id"))
    if not stored:
        raise _no_conversation(conversation_id)
    return Response(messages_body(conversation_id, stored), media_type="application/json")


async def delete_conversation(conversation_id: str, relay: CurrentRelay, user: QueryUser) -> Response:
    check_id(conversation_id, "conversation_id")
    # Its runs first: an answer saved after the delete would bring the conversation back.
    await relay.runs.cancel_conversation(user, conversation_id)
    if not await relay.history.delete(user, conversation_id):
        raise _no_conversation(conversation_id)
    return Response(status_code=204)


async def health(relay: CurrentRelay) -> Response:
    report = await relay.check_health()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


async def _start(request: Request, relay: Relay, req: ChatRequest) -> Response:
    if not req.message.strip():
        raise Refusal(422, "invalid_request", "message: must not be empty or blank", field="message")
    check_size(req.message, relay.settings.max_message_bytes, "message")
    check_text(req.message, "message")
    protocol = _protocol(request, relay)
    user_id = await identify(request, req.user_id)
    info = await relay.start_chat(
        req.message, user_id=user_id, conversation_id=req.conversation_id, regenerate=req.regenerate
    )
    return await stream_response(relay, info, after=0, protocol=protocol)


async def _resume(request: Request, relay: Relay, run_id: str, user_id: str, cursor: str | None) -> Response:
    info = await owned_run(relay, run_id, user_id)
    after = event_cursor(cursor)
    if after < 0:
        raise Refusal(422, "invalid_request", "last_event_id: must be >= 0", field="last_event_id")
    if info.status == "finished" and after >= info.last_seq:
        return Response(status_code=204)
    return await stream_response(relay, info, after=after, protocol=_protocol(request, relay))


def _protocol(request: Request, relay: Relay) -> str:
    """``?protocol=`` chooses the wire format of this one stream (``seed``, ``ai-sdk``, ``openai``)."""
    name = request.query_params.get("protocol") or "seed"
    if name not in relay.protocols:
        known = ", ".join(relay.protocols)
        raise Refusal(422, "invalid_request", f"protocol: must be one of {known}", field="protocol")
    return name


def _no_conversation(conversation_id: str) -> Refusal:
    return Refusal(404, "conversation_not_found", f"conversation {conversation_id} is unknown")
