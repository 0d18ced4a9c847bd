"""An OpenAI-compatible surface: ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.

So the official ``openai`` client, and whatever is built on it, can use any tokenrelay backend. Like OpenAI's API it
is stateless: the request's ``messages`` are the whole conversation (system messages included), handed to the
backend as they are, and nothing is written to the history. The ``model`` a request names is accepted whatever it
is (there is one backend); responses name the backend's model. ``user`` is the user id the request claims, resolved
like every other request. Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.

The client's own tools and output fields (``tools``, ``tool_choice``, ``response_format``, ``stop``, ``seed``...)
go to backends that take them and are refused by name by the others (``openai_tools.py``); the model's calls of
those tools come back as ``tool_calls`` for the client to run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route
from starlette.types import Receive

from tokenrelay.backends.base import ClientTools, GenerateOptions
from tokenrelay.errors import RunLimitError, StoreUnavailable, TokenrelayError
from tokenrelay.events import FinishEvent, RunPaused
from tokenrelay.messages import Message
from tokenrelay.protocols.base import StreamContext
from tokenrelay.protocols.openai_chat import CompletionBuilder, OpenAIChatEncoder, OpenAIChatProtocol, error_body
from tokenrelay.runs import Heartbeat
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.openai_tools import ChatMessage, ToolFields, check_support, client_tools, conversation
from tokenrelay.server.openapi import ChatCompletion, ModelList, ModelObject, errors, json_body, json_ok, sse_content
from tokenrelay.server.pipeline import (
    ID_PATTERN,
    Binding,
    BodyError,
    BodyProblem,
    CurrentRelay,
    InvalidRequest,
    Refusal,
    RefusingRoute,
    check_text,
    identify,
    parse,
    read_json_object,
    stream_route,
    unavailable,
)
from tokenrelay.server.relay import Relay
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.server.thread_routes import TRANSCRIPT_FACTOR, bound_router
from tokenrelay.stores.base import RunInfo

__all__ = ["ChatCompletionRequest", "OpenAIRoute", "create_openai_router", "openai_error", "openai_stream_routes"]

_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
_BODY_STATUS: dict[BodyProblem, tuple[int, str | None]] = {
    "too_large": (413, "body_too_large"),
    "invalid_json": (400, "invalid_json"),
    "not_object": (400, None),
    "too_deep": (400, "invalid_json"),
    "media_type": (415, "unsupported_media_type"),
    "incomplete": (400, "incomplete_body"),
    "timeout": (408, "request_timeout"),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(ToolFields):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    n: Literal[1] | None = None
    user: str | None = Field(None, min_length=1, max_length=256, pattern=ID_PATTERN)

    def conversation(self) -> list[Message]:
        return conversation(self.messages)

    def options(self, tools: ClientTools | None = None) -> GenerateOptions:
        return GenerateOptions(
            max_tokens=self.max_completion_tokens or self.max_tokens, temperature=self.temperature, client_tools=tools
        )


def openai_error(
    status: int, message: str, *, type_: str | None = None, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``; the type follows the status."""
    if type_ is None:
        type_ = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    return JSONResponse(error_body(message, type_, code, param), status_code=status)


class OpenAIRoute(RefusingRoute):
    """The OpenAI-compatible routes: refusals in OpenAI's error shape."""

    @staticmethod
    def refuse(exc: TokenrelayError) -> Response | None:
        match exc:
            case Refusal():
                response = openai_error(exc.status, exc.message, code=exc.code, param=exc.field)
                response.headers.update(exc.headers)
                return response
            case BodyError():
                status, code = _BODY_STATUS[exc.problem]
                response = openai_error(status, exc.message, code=code)
                if exc.closes:
                    response.headers["connection"] = "close"
                return response
            case InvalidRequest():
                loc = exc.error["loc"]
                param = ".".join(str(p) for p in loc if not str(p).startswith(("str", "list["))) or None
                message = f"{param}: {exc.error['msg']}" if param else str(exc.error["msg"])
                return openai_error(400, message, code="invalid_value" if param else None, param=param)
            case RunLimitError():
                response = openai_error(503, str(exc), code="overloaded")
                response.headers["retry-after"] = "1"
                return response
            case StoreUnavailable():
                response = openai_error(503, exc.message, code="unavailable")
                response.headers.update(unavailable(exc))
                return response
            case _:
                return None


async def _user(request: Request, claimed: str | None) -> str:
    """The user a request acts as; a refusal (``HTTPException``, e.g. ``AuthError``) in OpenAI's error shape."""
    try:
        return await identify(request, claimed)
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        raise Refusal(exc.status_code, detail.get("code"), str(detail.get("message")), headers=exc.headers) from None


async def _authenticated(request: Request) -> None:
    await _user(request, None)


def openai_stream_routes(binding: Binding) -> list[Route]:
    """Chat Completions (streaming or not) as a plain ASGI route (:func:`~tokenrelay.server.pipeline.stream_route`),
    refusing in OpenAI's error shape."""
    return [stream_route("/v1/chat/completions", ["POST"], binding, chat_completions, route_class=OpenAIRoute)]


def create_openai_router(
    relay: Relay, *, resolve_user: UserResolver | None = None, plain_streams: bool = False
) -> APIRouter:
    """The OpenAI-compatible routes, bound to ``relay``; ``resolve_user`` defaults to the relay's; ``plain_streams``:
    as :func:`~tokenrelay.server.routes.create_router`'s.

    An authentication refusal (``HTTPException``, e.g. ``server.auth.AuthError``) is answered in OpenAI's error shape.
    """
    binding = Binding.of(relay, resolve_user)
    streams = openai_stream_routes(binding) if plain_streams else ()
    router = bound_router(binding, route_class=OpenAIRoute, streams=streams)
    authenticated = [Depends(_authenticated)]
    summary = "OpenAI-compatible: the model this server serves"
    responses = {**json_ok(ModelList, "The one model"), **errors(401, surface="openai")}
    router.add_api_route(
        "/v1/models", list_models, methods=["GET"], dependencies=authenticated, summary=summary, responses=responses
    )
    router.add_api_route(
        "/v1/models/{model_name:path}",
        get_model,
        methods=["GET"],
        dependencies=authenticated,
        summary="OpenAI-compatible: one model",
        responses={**json_ok(ModelObject, "The model"), **errors(401, 404, surface="openai")},
        # Read from the path by the route itself: any text names a model (or none), nothing is refused with a 422.
        openapi_extra={
            "parameters": [{"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}]
        },
    )
    completion = json_ok(ChatCompletion, "The completion; with stream: true, chunks as Server-Sent Events")
    completion[200]["content"] = sse_content()  # beside the JSON the model describes
    router.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        summary="OpenAI-compatible Chat Completions, streaming or not",
        responses={**completion, **errors(400, 401, 403, 408, 413, 415, 422, 500, 503, surface="openai")},
        openapi_extra=json_body(ChatCompletionRequest, description="OpenAI's Chat Completions request"),
    )
    return router


async def list_models(relay: CurrentRelay) -> Response:
    return JSONResponse({"object": "list", "data": [_model_object(relay)]})


async def get_model(request: Request, relay: CurrentRelay) -> Response:
    model_name: str = request.path_params["model_name"]
    if model_name != _model(relay):
        raise Refusal(404, "model_not_found", f"The model '{model_name}' does not exist")
    return JSONResponse(_model_object(relay))


async def chat_completions(request: Request, relay: CurrentRelay) -> Response:
    limit = relay.settings.max_message_bytes
    await _user(request, None)  # authenticated before the body is read
    data = await read_json_object(request, limit * TRANSCRIPT_FACTOR)
    claimed = data.get("user")
    user_id = await _user(request, claimed if isinstance(claimed, str) and claimed else None)
    req = parse(ChatCompletionRequest, data)
    _check_messages(req.messages, limit)
    tools = client_tools(req)
    check_support(relay.backend, relay.backend.name, req, tools)
    messages = req.conversation()
    info = await relay.start_completion(messages, user_id=user_id, options=req.options(tools))
    ctx = StreamContext(run_id=info.run_id, conversation_id=info.conversation_id, user_id=user_id)
    if req.stream:
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        # With the client's own tools, the model's calls are the client's: streamed as they come. Without, a call
        # is held until it is known whether the backend ran it itself.
        encoder = OpenAIChatEncoder(
            ctx, model=_model(relay), include_usage=include_usage, client_calls_only=tools is None or not tools.tools
        )
        stream = await relay.follow(info, encoder)
        return SSEResponse(stream, headers={"x-run-id": info.run_id})
    builder = CompletionBuilder(ctx, model=_model(relay), client_calls_only=True)
    if not await _collect(relay, info, builder, request.receive):
        # The client left, and a non-streamed answer cannot be resumed: nothing is left to wait for.
        await relay.runs.cancel(info.run_id)
        return Response(status_code=499)
    if builder.error is not None:
        status = 503 if builder.error.retryable else 500
        raise Refusal(status, builder.error.code, builder.error.message)
    return JSONResponse(builder.completion(), headers={"x-run-id": info.run_id})


def _check_messages(messages: list[ChatMessage], limit: int) -> None:
    """Refuse a message's text (content, a call's arguments) over ``limit`` bytes or that cannot be stored."""
    for i, m in enumerate(messages):
        texts = [(f"messages.{i}.content", m.text())]
        texts += [
            (f"messages.{i}.tool_calls.{j}.function.arguments", c.function.arguments)
            for j, c in enumerate(m.tool_calls or ())
        ]
        for param, text in texts:
            if len(text.encode("utf-8", "surrogatepass")) > limit:
                raise Refusal(413, "message_too_long", f"{param}: over the limit of {limit} bytes", field=param)
            check_text(text, param)


def _model(relay: Relay) -> str:
    protocol = relay.protocols.get("openai")
    return protocol.model if isinstance(protocol, OpenAIChatProtocol) else relay.backend.name


def _model_object(relay: Relay) -> dict[str, Any]:
    return {"id": _model(relay), "object": "model", "created": int(relay.started_at), "owned_by": "tokenrelay"}


async def _collect(relay: Relay, info: RunInfo, builder: CompletionBuilder, receive: Receive) -> bool:
    """Fold the whole run into ``builder``; ``False`` if the client disconnected first."""
    subscription = await relay.runs.subscribe(info.run_id, 0)

    async def fold() -> None:
        async for item in subscription:
            if isinstance(item, Heartbeat):
                continue
            for stored in item:
                builder.add(stored.event)
                if isinstance(stored.event, FinishEvent | RunPaused):
                    return  # a pause for an approval ends the turn

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    folding = asyncio.create_task(fold())
    listening = asyncio.create_task(disconnected())
    try:
        await asyncio.wait((folding, listening), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (folding, listening):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await folding
        await subscription.aclose()
    return not folding.cancelled() and folding.exception() is None
