"""A remote backend's upstream latency, told to whoever listens in the current context (a run's observer).

A remote backend calls :func:`upstream_responded` once per request, when the upstream has answered (its response
head is in: the time to first byte, retries included). The run's task sets the listener (see
:mod:`tokenrelay.runs.observer`); with none set, the report costs a context variable lookup.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

__all__ = ["upstream_listener", "upstream_responded"]

upstream_listener: contextvars.ContextVar[Callable[[float], None] | None] = contextvars.ContextVar(
    "tokenrelay_upstream_listener", default=None
)


def upstream_responded(seconds: float) -> None:
    """The upstream answered ``seconds`` after its request was sent."""
    listener = upstream_listener.get()
    if listener is not None:
        listener(seconds)
