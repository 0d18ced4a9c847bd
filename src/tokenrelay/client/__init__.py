"""The Python client: iterate a chat stream's events, sync or async, with the project's own SSE decoder.

:class:`AsyncClient` and :class:`Client` are two thin shells with the same methods around one I/O-free core
(:mod:`tokenrelay.client.core`), which decides every attempt: what to request, how long to wait, when to give up.
Their streams (:class:`AsyncRunStream`, :class:`RunStream`) know their run: ``stream.cancel()`` is the Stop, and
leaving the loop only closes the connection (see :mod:`tokenrelay.client.stream`).
"""

from __future__ import annotations

from tokenrelay.client.aio import AsyncClient
from tokenrelay.client.core import Resume
from tokenrelay.client.errors import (
    IncompleteStreamError,
    TokenrelayConnectionError,
    TokenrelayError,
    TokenrelayHTTPError,
)
from tokenrelay.client.events import (
    ApprovalRequest,
    ApprovalResponse,
    ChatResult,
    Delta,
    Done,
    Metadata,
    Other,
    Paused,
    Reasoning,
    StreamError,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    ToolCallRecord,
    ToolResult,
    Usage,
)
from tokenrelay.client.stream import AsyncRunStream, RunStream
from tokenrelay.client.sync import Client

__all__ = [
    "ApprovalRequest",
    "ApprovalResponse",
    "AsyncClient",
    "AsyncRunStream",
    "ChatResult",
    "Client",
    "Delta",
    "Done",
    "IncompleteStreamError",
    "Metadata",
    "Other",
    "Paused",
    "Reasoning",
    "Resume",
    "RunStream",
    "StreamError",
    "StreamEvent",
    "TokenrelayConnectionError",
    "TokenrelayError",
    "TokenrelayHTTPError",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallRecord",
    "ToolResult",
    "Usage",
]
