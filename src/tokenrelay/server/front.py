"""The app's stream routes ahead of its middleware stack, when nothing in the stack has anything to do for them.

Every request to a Starlette app goes through its middleware stack: the server-error middleware, FastAPI's telemetry
and body-limit middleware, the user's middleware, the exception middleware, FastAPI's exit stack, the router. For a
stream, each layer's frame (and the ``send`` wrappers two of them put round every write) is held for as long as the
stream lasts — about 4 KB of a stream's memory, and a few calls per write. When the stack is only FastAPI's own (no
middleware was added, no telemetry is on, no handler for unexpected errors was registered and nothing replaced the
stack's building — an instrumentation), the app's stream routes (:func:`~tokenrelay.server.routes.stream_routes`,
the same handlers as the router's plain routes) are served straight from :meth:`RelayApp.__call__`: they answer
their refusals and errors through the app's exception handlers themselves, and an error they do not handle reaches
the server as it would through the stack (which has no handler for it). Anything else — another route, another
method, a stack that is not only FastAPI's — goes through the stack as usual.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

__all__ = ["RelayApp"]


class RelayApp(FastAPI):
    """A FastAPI app whose plain stream routes skip the middleware stack while it is only FastAPI's own."""

    # The routes served ahead of the stack: the same paths and methods as the router's first routes (nothing before
    # them in the router matches what they match), so that the request gets the same route either way.
    stream_routes: tuple[Route, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.stream_routes and self._bare_stack():
            for route in self.stream_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    if self.root_path:
                        scope["root_path"] = self.root_path
                    scope["app"] = self
                    scope.setdefault("router", self.router)
                    scope.update(child)
                    await route.app(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    def _bare_stack(self) -> bool:
        """Whether the middleware stack would do nothing for a stream route but pass it on."""
        if self.user_middleware or "build_middleware_stack" in vars(self):
            return False
        handlers = self.exception_handlers
        if 500 in handlers or Exception in handlers:
            return False  # the server-error middleware would answer an unexpected error with it
        telemetry = getattr(self, "_native_telemetry", None)
        return telemetry is None or not telemetry.enabled()
