"""What the routes tell the OpenAPI document: their request bodies, every status they answer, and their streams.

The routes read their bodies themselves (after authentication, under a size limit: see ``pipeline``), so FastAPI
cannot see the models they validate with; :func:`json_body` puts a model's schema in the document instead. The
refusals the pipeline raises are listed per route with the error shape of the route's surface, and the streaming
routes are described as ``text/event-stream`` (each event's fields as ``itemSchema``), not as JSON.

Only the description lives here: nothing in this module runs while a request is served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApprovalResult",
    "CancelResult",
    "ChatCompletion",
    "ConversationList",
    "ConversationMessages",
    "ErrorBody",
    "Health",
    "ModelList",
    "ModelObject",
    "OpenAIErrorBody",
    "Surface",
    "errors",
    "event_stream",
    "json_body",
    "json_ok",
    "query_parameter",
    "sse_content",
]

Surface = Literal["project", "openai"]


class _Open(BaseModel):
    # Documentation models: they describe what a route writes and are never used to build or check a response.
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Open):
    code: str = Field(description="machine-readable reason, e.g. invalid_request, run_not_found, overloaded")
    message: str = Field(description="what is wrong, for a person")
    field: str | None = Field(None, description="the request field at fault, when there is one")


class ErrorBody(_Open):
    """tokenrelay's error shape."""

    error: ErrorDetail


class OpenAIErrorDetail(_Open):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, server_error, ...")
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(_Open):
    """OpenAI's error shape, on the OpenAI-compatible routes."""

    error: OpenAIErrorDetail


class CancelResult(_Open):
    run_id: str
    cancelled: bool = Field(description="false when the run had already ended")


class ApprovalResult(_Open):
    run_id: str
    tool_call_id: str
    approved: bool
    status: str = Field(
        description="recorded (other calls still wait), resumed (the run goes on), or unchanged (answered so before)"
    )


class ConversationSummary(_Open):
    id: str
    title: str
    created_at: float
    updated_at: float


class ConversationList(_Open):
    conversations: list[ConversationSummary]


class StoredMessageOut(_Open):
    role: str
    content: str
    status: str
    run_id: str | None
    error_code: str | None
    output_tokens: int | None
    created_at: float
    parts: list[dict[str, Any]] = Field(description="the message as it was made: text, reasoning, tool calls, ...")


class ConversationMessages(_Open):
    conversation_id: str
    messages: list[StoredMessageOut]


class Health(_Open):
    status: Literal["ok", "unavailable"]
    instance: str = Field(description="the instance (process) that answered: its id in the shared run store")
    backend: str
    active_runs: int
    subscribers: int
    uptime_s: float
    backend_info: dict[str, Any]
    dependencies: dict[str, str] = Field(description="each dependency (store, history): ok, or why it is down")


class ModelObject(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Open):
    object: Literal["list"]
    data: list[ModelObject]


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]


# What each status means, whichever route answers it.
_MEANING: dict[int, str] = {
    400: "The body is not valid JSON, is nested too deep, or ended before its end",
    401: "Authentication is configured and the request has no valid bearer token",
    403: "The request's Origin is not one of the configured CORS origins",
    404: "No such resource for this user (another user's is answered the same)",
    408: "The request (its head, or its body) did not arrive in time",
    409: "The request conflicts with what was recorded already (a tool call answered otherwise)",
    413: "The body, or a message in it, is over the size limit",
    415: "The body is not JSON (content-type must be application/json)",
    422: "A field is missing, of the wrong type, or out of range (the error names it)",
    431: "The request's headers are too large or too many",
    500: "The backend failed to answer",
    503: "Overloaded, or a dependency (Redis, the database) is down: try again after Retry-After",
}

# Refused by the connection edge of ``tokenrelay serve`` before a route sees the request, on every route.
_EDGE = (408, 431, 503)
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}

_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string", "description": "the event's sequence number: resume after it with Last-Event-ID"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def errors(*statuses: int, surface: Surface = "project") -> dict[int | str, dict[str, Any]]:
    """The error responses ``statuses`` (and the edge's, which every route may answer), in ``surface``'s shape."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *_EDGE}):
        model: Any = ErrorBody
        if surface == "openai":
            # The edge answers in tokenrelay's shape whatever the route; the route itself in OpenAI's.
            model = OpenAIErrorBody | ErrorBody if status in _EDGE else OpenAIErrorBody
        response: dict[str, Any] = {"model": model, "description": _MEANING[status]}
        if status == 503:
            response["headers"] = _RETRY_AFTER
        out[status] = response
    return out


def event_stream(description: str, *, also: Iterable[int] = ()) -> dict[int | str, dict[str, Any]]:
    """A 200 that is a ``text/event-stream`` of events (``data``, ``id``...), and ``also`` (204: nothing to send)."""
    out: dict[int | str, dict[str, Any]] = {200: {"description": description, "content": sse_content()}}
    for status in also:
        out[status] = {"description": "Nothing to stream: the run has ended, or none is running"}
    return out


def sse_content() -> dict[str, Any]:
    """The ``content`` of a response that is a ``text/event-stream``: its events' fields as ``itemSchema``."""
    return {"text/event-stream": {"itemSchema": _SSE_EVENT}}


def json_ok(model: type[BaseModel], description: str, *, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """A JSON answer described by ``model``."""
    return {status: {"model": model, "description": description}}


def json_body(
    model: type[BaseModel], *, description: str, parameters: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` from its JSON body itself (and its undeclared parameters)."""
    schema = _inline(model.model_json_schema())
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }
    if parameters:
        extra["parameters"] = list(parameters)
    return extra


def query_parameter(name: str, description: str, values: Sequence[str] | None = None) -> dict[str, Any]:
    """An optional query parameter a route reads from the request itself."""
    schema: dict[str, Any] = {"type": "string"}
    if values is not None:
        schema["enum"] = list(values)
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` put in place of their ``$ref``: the document's components do not hold them.
    (The request models are not recursive, so this ends.)"""
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
