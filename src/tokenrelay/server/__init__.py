"""The HTTP side: an app factory, a mountable router (and its /metrics), settings, the SSE response."""

from tokenrelay.observability.metrics_route import metrics_router
from tokenrelay.server.app import create_app
from tokenrelay.server.relay import Relay
from tokenrelay.server.routes import create_router
from tokenrelay.server.settings import Settings
from tokenrelay.server.sse_response import SSEResponse

__all__ = ["Relay", "SSEResponse", "Settings", "create_app", "create_router", "metrics_router"]
