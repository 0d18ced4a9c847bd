"""Observability: OpenTelemetry spans per run, ``/metrics`` for a mounted router, JSON logs.

- :mod:`~tokenrelay.observability.tracing`: :class:`Tracing`, a span per run (the ``otel`` extra; imported only
  when tracing is on);
- :mod:`~tokenrelay.observability.logs`: the JSON log format and the one line logged per run;
- :mod:`~tokenrelay.observability.metrics_route`: :func:`metrics_router`;
- :func:`build_observer`: what the settings ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenrelay.observability.logs import JSONFormatter, RunLog, configure_json_logs, uvicorn_log_config
from tokenrelay.observability.metrics_route import metrics_router
from tokenrelay.runs.observer import Observers, RunObserver

if TYPE_CHECKING:
    from tokenrelay.backends.base import Backend
    from tokenrelay.observability.tracing import Tracing

__all__ = [
    "JSONFormatter",
    "RunLog",
    "build_observer",
    "build_tracing",
    "configure_json_logs",
    "metrics_router",
    "uvicorn_log_config",
]


def build_tracing(backend: Backend) -> Tracing:
    """The :class:`~tokenrelay.observability.tracing.Tracing` of ``backend``'s runs; a ``ConfigError`` naming the
    extra to install when OpenTelemetry is missing."""
    try:
        from tokenrelay.observability.tracing import Tracing
    except ImportError as exc:
        from tokenrelay._extras import missing_extra

        raise missing_extra("--otel", "opentelemetry-api", "otel", module="opentelemetry", cause=exc) from None
    return Tracing(backend.name, backend.describe())


def build_observer(backend: Backend, *, otel: bool) -> tuple[RunObserver, Tracing | None]:
    """The run observer the settings ask for: the run log line, and a span per run with ``otel``."""
    tracing = build_tracing(backend) if otel else None
    observers: list[RunObserver] = [RunLog()]
    if tracing is not None:
        observers.append(tracing)
    return Observers(observers), tracing
