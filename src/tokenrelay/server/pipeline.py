"""One request pipeline for every route: the relay it serves, who it acts as, its body, and its refusals.

Route functions are module-level; a router binds them to a relay. ``create_router(relay)`` (and its siblings) add a
router dependency, a :class:`Binding`, that puts the relay and the user resolver on the request, and the routes take
them through the dependencies :data:`CurrentRelay` and :data:`QueryUser`.

A route refuses a request by raising: :class:`Refusal` (status, code, message, field), :class:`BodyError` (the body
is too large, not JSON, not an object), :class:`InvalidRequest` (the body does not fit the route's model), or the
library's own :class:`~tokenrelay.errors.RunLimitError` and :class:`~tokenrelay.errors.RunNotFound`. The route class
(:class:`ProjectRoute`, or the OpenAI-compatible surface's own) answers them in its surface's error shape. That is
done per route rather than by the app's exception handlers so that a router mounted in someone else's app answers
exactly as in tokenrelay's own.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import urlsplit

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenrelay.errors import RunLimitError, RunNotFound, StoreUnavailable, TokenrelayError
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.body import BodyError, BodyProblem, is_json_media_type, read_json_body
from tokenrelay.server.relay import Relay
from tokenrelay.server.sse_response import SSEResponse
from tokenrelay.stores.base import RunInfo

__all__ = [
    "ID_PATTERN",
    "Binding",
    "BodyError",
    "BodyProblem",
    "CurrentRelay",
    "InvalidRequest",
    "ProjectRoute",
    "QueryUser",
    "Refusal",
    "RefusingRoute",
    "authenticate",
    "check_id",
    "check_size",
    "check_text",
    "error_response",
    "event_cursor",
    "identify",
    "is_stream_endpoint",
    "owned_run",
    "parse",
    "read_json_object",
    "stream_response",
    "stream_route",
    "unavailable",
]

# Letters, digits and ``_.:@-``, with at least one that is not a dot: ``.`` and ``..`` are path segments.
ID_PATTERN = r"^[A-Za-z0-9_.:@-]*[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*$"
_ID = re.compile(ID_PATTERN)

_BINDING = "tokenrelay.binding"
M = TypeVar("M", bound=BaseModel)


class Refusal(TokenrelayError):
    """A request refused: answered ``status`` with ``code``, ``message`` and the ``field`` at fault."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class InvalidRequest(TokenrelayError):
    """The body does not fit the route's model; ``error`` is pydantic's first complaint."""

    def __init__(self, error: ErrorDetails) -> None:
        super().__init__(error["msg"])
        self.error = error


@dataclass(frozen=True, slots=True)
class Binding:
    """What a router's routes serve: its relay, and how it tells who a request acts as. A router dependency."""

    relay: Relay
    resolve_user: UserResolver

    @classmethod
    def of(cls, relay: Relay, resolve_user: UserResolver | None) -> Binding:
        """The binding of a router serving ``relay``; ``resolve_user`` defaults to the relay's, as for every route."""
        return cls(relay, resolve_user or relay.resolve_user)

    async def __call__(self, request: Request) -> None:
        request.scope[_BINDING] = self
        self.relay.enter_request(request.headers)  # tracing: the request's trace context, for the runs it starts
        if request.method in _STATE_CHANGING:
            _check_origin(request, self.relay.settings.cors_origins)
            content_type = request.headers.get("content-type")
            if content_type is not None and not is_json_media_type(content_type):
                # A cross-site form or text/plain POST needs no preflight: refused, whatever the route.
                raise BodyError("media_type", "body: must be JSON (content-type: application/json)")


_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _check_origin(request: Request, allowed: list[str]) -> None:
    """With CORS origins configured, a state-changing request from a browser must come from one of them (or from
    this server's own page). Browsers always send ``Origin`` on such requests; other clients send none."""
    origin = request.headers.get("origin")
    if origin is None or not allowed or "*" in allowed or origin in allowed:
        return
    if urlsplit(origin).netloc == request.headers.get("host"):
        return  # the page this server serves itself
    raise Refusal(403, "origin_not_allowed", f"origin {origin} may not call this API")


def _binding(request: Request) -> Binding:
    binding = request.scope.get(_BINDING)
    if not isinstance(binding, Binding):
        raise RuntimeError("a tokenrelay route must be served through create_router() or its siblings")
    return binding


def _relay(request: Request) -> Relay:
    return _binding(request).relay


async def identify(request: Request, claimed: str | None) -> str:
    """The user ``request`` acts as, given the user id it claims (may raise ``server.auth.AuthError``)."""
    return await _binding(request).resolve_user(request, claimed)


async def _query_user(request: Request, user_id: Annotated[str | None, Query()] = None) -> str:
    return await identify(request, user_id)


CurrentRelay = Annotated[Relay, Depends(_relay)]
"""The relay the route's router was created for."""
QueryUser = Annotated[str, Depends(_query_user)]
"""Who the request acts as, given the ``?user_id=`` it claims."""


async def authenticate(request: Request) -> None:
    """Refuse an unauthenticated request (``AuthError``) before its body is read: the body may be large."""
    await identify(request, None)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: JSON only, read only up to ``limit`` bytes and within the body timeout."""
    return await read_json_body(request, limit, timeout_s=_relay(request).settings.body_timeout_s)


def parse(model: type[M], data: object) -> M:
    """``data`` validated by ``model``, or :class:`InvalidRequest`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]) from None


def check_size(text: str, limit: int, field: str) -> None:
    """Refuse a message over ``limit`` UTF-8 bytes (413 ``message_too_long``)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        message = f"message: {size} bytes is over the limit of {limit}"
        raise Refusal(413, "message_too_long", message, field=field)


def check_text(text: str, field: str) -> None:
    """Refuse text that cannot be stored as it is: a NUL character, or a lone surrogate (not encodable UTF-8)."""
    if "\x00" in text:
        raise Refusal(422, "invalid_request", f"{field}: must not contain NUL characters", field=field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal(
            422, "invalid_request", f"{field}: must be valid Unicode (no lone surrogates)", field=field
        ) from None


def check_id(value: str, field: str) -> str:
    """An id from a path (a conversation, a chat): refused unless it fits :data:`ID_PATTERN` and 256 characters."""
    if len(value) > 256 or _ID.fullmatch(value) is None:
        message = f"{field}: must be 1 to 256 letters, digits or _.:@- (not only dots)"
        raise Refusal(422, "invalid_request", message, field=field)
    return value


def unavailable(exc: StoreUnavailable) -> dict[str, str]:
    """The headers of a 503 for a dependency that is down: when to try again."""
    return {"retry-after": str(max(1, math.ceil(exc.retry_after)))}


def event_cursor(value: str | None) -> int:
    """A client's ``Last-Event-ID`` (header or query) as a cursor: 0 when absent or empty."""
    try:
        return int(value) if value else 0
    except ValueError:
        raise Refusal(422, "invalid_request", "last_event_id: must be an integer", field="last_event_id") from None


async def owned_run(relay: Relay, run_id: str, user_id: str) -> RunInfo:
    """The run, if it exists and is the user's: another user's run is :class:`RunNotFound` too, like a missing one."""
    info = await relay.store.get(run_id)
    if info is None or info.user_id != user_id:
        raise RunNotFound(run_id)
    return info


async def stream_response(relay: Relay, info: RunInfo, *, after: int, protocol: str) -> SSEResponse:
    """The run's events after ``after`` as an SSE response in ``protocol``, with the run's and protocol's headers."""
    stream = await relay.stream(info, after=after, protocol=protocol)
    wire = relay.protocols[protocol]
    headers = {"x-run-id": info.run_id, "x-conversation-id": info.conversation_id, **wire.headers}
    return SSEResponse(stream, media_type=wire.media_type, headers=headers)


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """The project's error shape: ``{"error": {"code", "message", "field"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return JSONResponse({"error": error}, status_code=status)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class RefusingRoute(APIRoute):
    """A route that answers the pipeline's refusals through :meth:`refuse`; other errors go on up as before."""

    @staticmethod
    def refuse(exc: TokenrelayError) -> Response | None:
        """The response to ``exc`` in this surface's shape; ``None`` for an error it does not answer."""
        raise NotImplementedError

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        refuse = self.refuse

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                # A declared parameter FastAPI itself refused: the surface's shape, as the document says.
                answer = refuse(InvalidRequest(exc.errors()[0]))
                if answer is None:
                    raise
                return answer
            except TokenrelayError as exc:
                response = refuse(exc)
                if response is None:
                    raise
                return response

        return handle


_BODY_STATUS: dict[BodyProblem, tuple[int, str]] = {
    "too_large": (413, "body_too_large"),
    "invalid_json": (400, "invalid_json"),
    "not_object": (422, "invalid_request"),
    "too_deep": (400, "invalid_json"),
    "media_type": (415, "unsupported_media_type"),
    "incomplete": (400, "incomplete_body"),
    "timeout": (408, "request_timeout"),
}


class ProjectRoute(RefusingRoute):
    """tokenrelay's own routes: refusals in the project's error shape."""

    @staticmethod
    def refuse(exc: TokenrelayError) -> Response | None:
        match exc:
            case Refusal():
                response = error_response(exc.status, exc.code or "invalid_request", exc.message, exc.field)
                response.headers.update(exc.headers)
                return response
            case BodyError():
                status, code = _BODY_STATUS[exc.problem]
                response = error_response(status, code, exc.message, "body")
                if exc.closes:
                    response.headers["connection"] = "close"
                return response
            case InvalidRequest():
                field = ".".join(str(p) for p in exc.error["loc"]) or "body"
                return error_response(422, "invalid_request", f"{field}: {exc.error['msg']}", field)
            case RunLimitError():
                response = error_response(503, "overloaded", str(exc))
                response.headers["retry-after"] = "1"
                return response
            case StoreUnavailable():
                response = error_response(503, "unavailable", exc.message)
                response.headers.update(unavailable(exc))
                return response
            case RunNotFound():
                # Raised with the run's id, by the store, the runs and owned_run alike.
                return error_response(404, "run_not_found", f"run {exc} is unknown or expired")
            case _:
                return None


class _StreamEndpoint:
    """One stream route as a plain ASGI app: the router's binding, the handler, and the project's refusals — what
    :class:`ProjectRoute` does for a FastAPI route, without FastAPI's request machinery (its exit stacks, the
    dependency solver's state, its wrappers' frames), which would be held for as long as the stream lasts.

    An error raised before the response is answered here by the app's own exception handlers (as the app's exception
    middleware would), so that the route answers the same whether the app's middleware stack runs in front of it
    or not (:mod:`tokenrelay.server.front`)."""

    __slots__ = ("_allow", "_binding", "_handler", "_refuse")

    def __init__(
        self,
        binding: Binding,
        handler: Callable[[Request, Relay], Awaitable[Response]],
        methods: list[str],
        refuse: Callable[[TokenrelayError], Response | None],
    ) -> None:
        self._binding = binding
        self._handler = handler
        self._allow = ", ".join(methods)
        self._refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            if scope["method"] == "HEAD":
                # Starlette routes a HEAD to a GET route (FastAPI's do not): a HEAD must not start a run. Refused as
                # FastAPI refuses it, by the app's own handler.
                raise StarletteHTTPException(405, headers={"Allow": self._allow})
            await self._binding(request)
            response = await self._handler(request, self._binding.relay)
        except TokenrelayError as exc:
            response = self._refuse(exc) or await _handled(request, exc)  # AuthError, …: the app's handler
        except StarletteHTTPException as exc:
            response = await _handled(request, exc)
        await response(scope, receive, send)


async def _handled(request: Request, exc: Exception) -> Response:
    """The response of the app's handler for ``exc`` (looked up as Starlette does: the status code of an
    HTTPException, then the exception's classes); ``exc`` again when the app has none."""
    handlers: Mapping[Any, Callable[..., Any]] = getattr(request.scope.get("app"), "exception_handlers", {})
    handler = handlers.get(exc.status_code) if isinstance(exc, StarletteHTTPException) else None
    if handler is None:
        handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
    if handler is None:
        raise exc
    response = handler(request, exc)
    if inspect.isawaitable(response):
        response = await response
    return cast(Response, response)


def is_stream_endpoint(app: object) -> bool:
    """Whether ``app`` (a route's) is a plain stream endpoint of :func:`stream_route`."""
    return isinstance(app, _StreamEndpoint)


def stream_route(
    path: str,
    methods: list[str],
    binding: Binding,
    handler: Callable[[Request, Relay], Awaitable[Response]],
    *,
    route_class: type[RefusingRoute] = ProjectRoute,
) -> Route:
    """A stream route served as plain ASGI (see :class:`_StreamEndpoint`), refusing as ``route_class`` does; left out
    of the OpenAPI document, which describes the FastAPI route of the same path and method."""
    endpoint = _StreamEndpoint(binding, handler, methods, route_class.refuse)
    return Route(path, endpoint, methods=methods, include_in_schema=False)
