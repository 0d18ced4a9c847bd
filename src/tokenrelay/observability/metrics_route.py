"""``GET /metrics`` as a router of its own, for an app that mounts tokenrelay's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import Response

from tokenrelay.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from tokenrelay.server.relay import Relay

__all__ = ["metrics_router"]


def metrics_router(relay: Relay, *, path: str = "/metrics") -> APIRouter:
    """A router serving ``relay``'s Prometheus metrics at ``path``:
    ``app.include_router(metrics_router(relay))``.

    It has no authentication of its own: give it your app's (``include_router(..., dependencies=[...])``) or
    expose it to your scraper only.
    """
    if not path.startswith("/"):
        raise ValueError(f"path: must start with '/', not {path!r}")
    router = APIRouter()

    async def metrics() -> Response:
        # Prometheus text format; rendered on request, nothing of it runs on the streaming path.
        return Response(relay.metrics.render(), media_type=CONTENT_TYPE)

    router.add_api_route(path, metrics, methods=["GET"], include_in_schema=False)
    return router
