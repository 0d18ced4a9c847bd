"""An OpenAI-compatible surface: ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.

So the official ``openai`` client, and whatever is built on it, can use any tokenrelay backend. Like OpenAI's API it
is stateless: the request's ``messages`` are the whole conversation (system messages included), handed to the
backend as they are, and nothing is written to the history. The ``model`` a request names is accepted whatever it
is (there is one backend); responses name the backend's model. ``user`` is the user id the request claims, resolved
like every other request. Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive

from tokenrelay.backends.base import GenerateOptions, Message, Role
from tokenrelay.events import FinishEvent
from tokenrelay.protocols.base import StreamContext
from tokenrelay.protocols.openai_chat import CompletionBuilder, OpenAIChatEncoder, OpenAIChatProtocol, error_body
from tokenrelay.runs import HEARTBEAT, RunLimitError
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.relay import Relay
from tokenrelay.server.routes import ID_PATTERN
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.stores.base import RunInfo

__all__ = ["ChatCompletionRequest", "create_openai_router", "openai_error"]

TRANSCRIPT_FACTOR = 64

_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
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
        out: list[Message] = []
        for m in self.messages:
            role: Role = "system" if m.role == "developer" else m.role
            content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or ())
            out.append(Message(role, content))
        return out

    def options(self) -> GenerateOptions:
        return GenerateOptions(max_tokens=self.max_completion_tokens or self.max_tokens, temperature=self.temperature)


def openai_error(
    status: int, message: str, *, type_: str | None = None, code: str | None = None, param: str | None = None
) -> JSONResponse:
    if type_ is None:
        type_ = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    return JSONResponse(error_body(message, type_, code, param), status_code=status)


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("str", "list["))) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return openai_error(400, message, code="invalid_value" if param else None, param=param)


def create_openai_router(relay: Relay, *, resolve_user: UserResolver | None = None) -> APIRouter:
    """The OpenAI-compatible routes, bound to ``relay``; ``resolve_user`` defaults to the relay's.

    An authentication refusal (``HTTPException``, e.g. ``server.auth.AuthError``) is answered in OpenAI's error shape.
    """
    router = APIRouter()
    resolve_user = resolve_user or relay.resolve_user
    settings = relay.settings
    body_limit = settings.max_message_bytes * TRANSCRIPT_FACTOR

    async def identify(request: Request, claimed: str | None) -> str | JSONResponse:
        """The user a request acts as, or its refusal in OpenAI's error shape (rather than the project's)."""
        try:
            return await resolve_user(request, claimed)
        except HTTPException as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
            response = openai_error(exc.status_code, str(detail.get("message")), code=detail.get("code"))
            response.headers.update(exc.headers or {})
            return response

    def model() -> str:
        protocol = relay.protocols.get("openai")
        return protocol.model if isinstance(protocol, OpenAIChatProtocol) else relay.backend.name

    def model_object() -> dict[str, Any]:
        return {"id": model(), "object": "model", "created": int(relay.started_at), "owned_by": "tokenrelay"}

    @router.get("/v1/models", summary="OpenAI-compatible: the model this server serves")
    async def list_models(request: Request) -> Response:
        if isinstance(refused := await identify(request, None), JSONResponse):
            return refused
        return JSONResponse({"object": "list", "data": [model_object()]})

    @router.get("/v1/models/{model_name:path}", summary="OpenAI-compatible: one model")
    async def get_model(request: Request, model_name: str) -> Response:
        if isinstance(refused := await identify(request, None), JSONResponse):
            return refused
        if model_name != model():
            return openai_error(404, f"The model '{model_name}' does not exist", code="model_not_found")
        return JSONResponse(model_object())

    @router.post("/v1/chat/completions", summary="OpenAI-compatible Chat Completions, streaming or not")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > body_limit:
            return openai_error(413, f"request body: over {body_limit} bytes", code="body_too_large")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return openai_error(400, f"body: not valid JSON ({exc})", code="invalid_json")
        if not isinstance(data, dict):
            return openai_error(400, "body: must be a JSON object")
        claimed = data.get("user")
        user_id = await identify(request, claimed if isinstance(claimed, str) and claimed else None)
        if isinstance(user_id, JSONResponse):
            return user_id
        try:
            req = ChatCompletionRequest.model_validate(data)
        except ValidationError as exc:
            return _validation_error(exc)
        messages = req.conversation()
        for i, m in enumerate(messages):
            if len(m.content.encode("utf-8", "surrogatepass")) > settings.max_message_bytes:
                return openai_error(
                    413,
                    f"messages.{i}.content: over the limit of {settings.max_message_bytes} bytes",
                    code="message_too_long",
                    param=f"messages.{i}.content",
                )
        try:
            info = await relay.start_completion(messages, user_id=user_id, options=req.options())
        except RunLimitError as exc:
            response = openai_error(503, str(exc), code="overloaded")
            response.headers["retry-after"] = "1"
            return response
        ctx = StreamContext(run_id=info.run_id, conversation_id=info.conversation_id, user_id=user_id)
        if req.stream:
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            encoder = OpenAIChatEncoder(ctx, model=model(), include_usage=include_usage)
            stream = await relay.follow(info, encoder)
            return SSEResponse(stream, headers={"x-run-id": info.run_id})
        builder = CompletionBuilder(ctx, model=model())
        if not await _collect(relay, info, builder, request.receive):
            return Response(status_code=499)  # the client left; closing the subscription cancelled the run
        if builder.error is not None:
            status = 503 if builder.error.retryable else 500
            return openai_error(status, builder.error.message, code=builder.error.code)
        return JSONResponse(builder.completion(), headers={"x-run-id": info.run_id})

    return router


async def _collect(relay: Relay, info: RunInfo, builder: CompletionBuilder, receive: Receive) -> bool:
    """Fold the whole run into ``builder``; ``False`` if the client disconnected first."""
    subscription = await relay.runs.subscribe(info.run_id, 0)

    async def fold() -> None:
        async for item in subscription:
            if item is HEARTBEAT:
                continue
            assert isinstance(item, list)
            for stored in item:
                builder.add(stored.event)
                if isinstance(stored.event, FinishEvent):
                    return

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
