"""The Python client: iterate a chat stream's events, sync or async, with the project's own SSE decoder.

:class:`AsyncClient` and :class:`Client` are two thin shells with the same methods around one I/O-free core
(:mod:`tokenrelay.client.core`), which decides every attempt: what to request, how long to wait, when to give up.
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
from tokenrelay.client.events import ChatResult, Delta, Done, Other, StreamError, StreamEvent
from tokenrelay.client.sync import Client

__all__ = [
    "AsyncClient",
    "ChatResult",
    "Client",
    "Delta",
    "Done",
    "IncompleteStreamError",
    "Other",
    "Resume",
    "StreamError",
    "StreamEvent",
    "TokenrelayConnectionError",
    "TokenrelayError",
    "TokenrelayHTTPError",
]
