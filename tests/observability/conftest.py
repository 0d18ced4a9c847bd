"""The SDK's in-memory exporter behind the process's global TracerProvider (it can be set once per process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_EXPORTER = InMemorySpanExporter()


def _global_provider() -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    return provider


@pytest.fixture(scope="session")
def _tracing_installed() -> InMemorySpanExporter:
    _global_provider().add_span_processor(SimpleSpanProcessor(_EXPORTER))
    return _EXPORTER


@pytest.fixture
def spans(_tracing_installed: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test, in the global provider that tokenrelay's ``--otel`` uses."""
    _tracing_installed.clear()
    yield _tracing_installed
    _tracing_installed.clear()
