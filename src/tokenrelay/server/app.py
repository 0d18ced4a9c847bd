"""The application factory: the API router, the chat page, and a lifespan that owns the backend."""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenrelay import __version__
from tokenrelay.backends.base import Backend
from tokenrelay.metrics import CONTENT_TYPE
from tokenrelay.server.auth import AuthError
from tokenrelay.server.front import RelayApp
from tokenrelay.server.openai_routes import openai_error
from tokenrelay.server.pipeline import Binding, error_response
from tokenrelay.server.relay import Relay
from tokenrelay.server.routes import create_router, stream_routes
from tokenrelay.server.settings import Settings

__all__ = ["PAGE_HEADERS", "create_app", "missing_page_hint", "static_dir"]

log = logging.getLogger("tokenrelay.server")

# The chat page loads only its own script and stylesheet and talks only to this server: nothing else may run in
# it, frame it, or learn where it was opened from.
PAGE_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}

_NO_PAGE = """<!doctype html><meta charset="utf-8"><title>tokenrelay</title>
<p>The chat page is missing: {hint}. The API works without it:
<code>curl -N localhost:8000/api/chat/stream -H 'content-type: application/json' -d '{{"message":"hi"}}'</code></p>
"""


def static_dir() -> Path:
    return Path(str(resources.files("tokenrelay.server"))) / "static"


def missing_page_hint(static: Path) -> str:
    """What builds the chat page that ``static`` lacks: ``make web`` in a clone, a complete wheel otherwise."""
    clone = static.parents[3]  # <clone>/src/tokenrelay/server/static
    if (clone / "web" / "package.json").is_file() and (clone / "Makefile").is_file():
        return f"build it with `make web` in {clone} (needs Node 20+)"
    return (
        f"this installation of tokenrelay has no {static}: install a wheel built with the page "
        "(`make web` then `python -m build` in a clone)"
    )


class _Assets(StaticFiles):
    """The page's scripts and styles, looked up at each request: a page built after the server started is served,
    and until then every asset is a 404."""

    async def check_config(self) -> None:
        # StaticFiles refuses a missing folder at the first request; here it only means "not built yet".
        return None


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, *, relay: Relay | None = None
) -> FastAPI:
    """A FastAPI app serving tokenrelay.

    Pass a ``backend`` (or a whole ``relay``) to use it instead of the one the settings describe.
    """
    if relay is None:
        settings = settings or Settings()
        if backend is None:
            from tokenrelay.server.factory import build_backend

            backend = build_backend(settings)
        relay = Relay(backend, settings)
    bound = relay

    static = static_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not (static / "index.html").is_file():
            log.warning("tokenrelay: the chat page at / is missing: %s", missing_page_hint(static))
        async with bound.lifespan():
            yield

    app = RelayApp(title="tokenrelay", version=__version__, lifespan=lifespan)
    app.state.relay = relay
    if relay.settings.cors_origins:
        _add_cors(app, relay.settings.cors_origins)
    # The app's own routes have no dependencies besides the router's: its streams may skip FastAPI's machinery, and
    # while its middleware stack is only FastAPI's, the stack too (server.front).
    app.include_router(create_router(relay, plain_streams=True))
    app.stream_routes = tuple(stream_routes(Binding.of(relay, None)))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # Prometheus text format; rendered on request, nothing of it runs on the streaming path.
        return Response(bound.metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(AuthError)
    async def unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        # The project's error shape ({"error": {...}}) rather than FastAPI's {"detail": ...}.
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]  # Starlette's typing
    app.mount("/assets", _Assets(directory=static / "assets", check_dir=False), name="assets")

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> HTMLResponse | FileResponse:
        page = static / "index.html"
        if page.is_file():
            return FileResponse(page, headers={"cache-control": "no-cache", **PAGE_HEADERS})
        return HTMLResponse(_NO_PAGE.format(hint=html.escape(missing_page_hint(static))), headers=PAGE_HEADERS)

    return app


def _add_cors(app: FastAPI, origins: list[str]) -> None:
    # CORSMiddleware is pure ASGI (not BaseHTTPMiddleware), so it does not buffer the stream.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["*"],
        expose_headers=["x-run-id", "x-conversation-id"],
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A request no route matched (an unknown path, a path parameter that cannot match, a wrong method), in the
    error shape of the surface it was meant for: OpenAI's under ``/v1``, the project's under ``/api``."""
    path = request.url.path
    message = str(exc.detail)
    if path.startswith("/v1/"):
        response: Response = openai_error(
            exc.status_code, message, code="not_found" if exc.status_code == 404 else None
        )
    elif path.startswith("/api/"):
        code = (
            "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else "http_error"
        )
        response = error_response(exc.status_code, code, message)
    else:
        return await http_exception_handler(request, exc)
    if exc.headers:
        response.headers.update(exc.headers)
    return response
