"""OpenTelemetry tracing: one span per run, with the GenAI semantic conventions' attributes.

Needs the ``otel`` extra (``opentelemetry-api``) and is off unless asked for (``--otel``, ``TOKENRELAY_OTEL=1``).
tokenrelay configures no exporter: spans go to whatever global ``TracerProvider`` the host has set
(``opentelemetry-instrument``, the ``OTEL_*`` environment variables, or the host app's own setup); with none set,
the API's tracer is a no-op.

A run outlives the request that started it, so its span is started as the run starts, as a child of the span
current in the starting request (the host's HTTP instrumentation), or of the W3C ``traceparent`` the request
carried when there is none (:meth:`Tracing.enter_request`), and ended when the run's end is recorded, wherever
that happens. The span is current in the run's task, so the backend's own instrumented calls (an httpx request to
the upstream) are its children.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tokenrelay import __version__
from tokenrelay.runs.observer import RunWatch

if TYPE_CHECKING:
    from tokenrelay.runs.base import Transcript
    from tokenrelay.stores.base import RunInfo

__all__ = ["PROVIDERS", "Tracing"]

# gen_ai.provider.name for each backend: the API it speaks (well-known values where the conventions have one).
PROVIDERS = {
    "openai": "openai",
    "agents": "openai",
    "anthropic": "anthropic",
    "local": "llama.cpp",
}
# Backends that call a remote server: their spans are CLIENT spans; an in-process model's are INTERNAL.
_REMOTE = frozenset({"openai", "agents", "anthropic"})


class Tracing:
    """A :class:`~tokenrelay.runs.observer.RunObserver` that traces each run as a span named ``chat {model}``."""

    def __init__(
        self,
        backend: str,
        describe: Mapping[str, Any] | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        facts = dict(describe or {})
        model = facts.get("model")
        self.model = str(model) if model else None
        self.span_name = f"chat {self.model}" if self.model else "chat"
        self.kind = SpanKind.CLIENT if backend in _REMOTE else SpanKind.INTERNAL
        provider = PROVIDERS.get(backend, f"tokenrelay.{backend}")
        self.attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,  # the older name of gen_ai.provider.name, still what many backends read
            "tokenrelay.backend": backend,
        }
        if self.model:
            self.attributes["gen_ai.request.model"] = self.model
        self.attributes.update(_server(facts.get("base_url")))
        # The global provider is looked up at each span (a proxy), so a provider the host sets later still counts.
        self.tracer = trace.get_tracer("tokenrelay", __version__, tracer_provider=tracer_provider)

    def run_started(self, info: RunInfo) -> RunWatch:
        attributes = {
            **self.attributes,
            "tokenrelay.run_id": info.run_id,
            "tokenrelay.conversation_id": info.conversation_id,
        }
        if info.user_id:
            attributes["user.id"] = info.user_id
        span = self.tracer.start_span(self.span_name, kind=self.kind, attributes=attributes)
        return _SpanWatch(span)

    @staticmethod
    def enter_request(headers: Mapping[str, str]) -> None:
        """Make the request's W3C trace context (``traceparent``, read by the configured propagators) current,
        unless a span already is (the host's instrumentation): the parent of the runs this request starts."""
        if trace.get_current_span().get_span_context().is_valid:
            return
        if "traceparent" not in headers:
            return
        otel_context.attach(propagate.extract(headers))


class _SpanWatch(RunWatch):
    __slots__ = ("span", "started")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.started = time.monotonic()

    def enter(self) -> None:
        otel_context.attach(trace.set_span_in_context(self.span))

    def first_token(self) -> None:
        ttft = time.monotonic() - self.started
        self.span.add_event("gen_ai.first_token", {"gen_ai.server.time_to_first_token": ttft})
        self.span.set_attribute("gen_ai.server.time_to_first_token", ttft)

    def upstream_responded(self, seconds: float) -> None:
        self.span.add_event("tokenrelay.upstream_responded", {"tokenrelay.upstream.time_to_first_byte": seconds})
        self.span.set_attribute("tokenrelay.upstream.time_to_first_byte", seconds)

    def ended(self, transcript: Transcript, *, lost: bool, paused: bool = False) -> None:
        span = self.span
        if lost:
            span.add_event("tokenrelay.lost", {"message": "ended by another instance (this one was taken for dead)"})
            span.end()
            return
        if paused:  # waiting for a tool call's approval: the model's turn ended at the call
            span.add_event("tokenrelay.paused", {"tokenrelay.approvals": len(transcript.requests)})
        span.set_attribute("gen_ai.response.finish_reasons", ["tool_calls" if paused else transcript.reason])
        usage = transcript.usage
        if usage is not None and usage.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        if usage is not None and usage.output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if transcript.reason == "cancelled":
            span.add_event("tokenrelay.cancelled")
        error = transcript.error
        if error is not None and transcript.reason == "error":
            span.set_attribute("error.type", error.code)
            span.add_event(
                "tokenrelay.error",
                {"error.type": error.code, "error.message": error.message, "error.retryable": error.retryable},
            )
            span.set_status(Status(StatusCode.ERROR, error.code))
        span.end()


def _server(base_url: object) -> dict[str, Any]:
    """``server.address`` / ``server.port`` of a remote backend's API (the backend's public URL)."""
    if not isinstance(base_url, str) or not base_url:
        return {}
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    out: dict[str, Any] = {}
    if parts.hostname:
        out["server.address"] = parts.hostname
        out["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return out
