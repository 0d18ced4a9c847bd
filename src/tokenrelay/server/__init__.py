"""The HTTP side: an app factory, a mountable router, settings, the SSE response."""

from tokenrelay.server.app import create_app
from tokenrelay.server.relay import Relay
from tokenrelay.server.routes import create_router
from tokenrelay.server.settings import Settings
from tokenrelay.server.sse_response import SSEResponse

__all__ = ["Relay", "SSEResponse", "Settings", "create_app", "create_router"]
