"""A span per run, through a real server: GenAI attributes, parentage under the request, first token, cancel, error."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import running_server, wait_for_async
from tests.server.helpers import payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.backends.base import GenerateOptions, Message
from tokenrelay.errors import BackendError, ConfigError
from tokenrelay.events import Event, FinishEvent, TextDelta, UsageEvent
from tokenrelay.server import Relay, Settings, create_app, create_router

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class ModelBackend(ScriptedBackend):
    """A scripted backend that says it is OpenAI's ``gpt-test``, and notes the span current while it streams."""

    name = "openai"

    def __init__(self, script: Sequence[Any]) -> None:
        super().__init__(script)
        self.current_spans: list[int] = []

    def describe(self) -> dict[str, Any]:
        return {"model": "gpt-test", "base_url": "https://api.example.com/v1"}

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        self.current_spans.append(trace.get_current_span().get_span_context().span_id)
        async for event in super().stream(messages, options):
            yield event


def otel_settings(**overrides: Any) -> Settings:
    return Settings(**{"backend": "synthetic", "history": "memory", "otel": True, **overrides})


async def run_spans(exporter: InMemorySpanExporter, count: int = 1) -> list[ReadableSpan]:
    def found() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]

    await wait_for_async(lambda: len(found()) >= count, timeout=10, what="the run's span to end")
    return found()


def ancestors(span: ReadableSpan, finished: Sequence[ReadableSpan]) -> list[int]:
    """The span ids above ``span``, nearest first, ending with the remote parent's (the traceparent's)."""
    by_id = {s.context.span_id: s for s in finished}
    chain: list[int] = []
    parent = span.parent
    while parent is not None:
        chain.append(parent.span_id)
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return chain


def host_app(relay: Relay) -> FastAPI:
    """A host app mounting tokenrelay's router under /ai, without FastAPI's own request tracing (on by default in
    the releases that have it, where a provider is configured)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with relay.lifespan():
            yield

    options: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:
        options["telemetry"] = {"tracing": False}
    host = FastAPI(lifespan=lifespan, **options)
    host.include_router(create_router(relay), prefix="/ai")
    return host


@asynccontextmanager
async def served(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        yield http


async def chat(http: httpx.AsyncClient, message: str, **headers: str) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    body = {"message": message, "user_id": "alice"}
    async with http.stream("POST", "/api/chat/stream", json=body, headers=headers) as response:
        assert response.status_code == 200
        return response.headers, payloads(await read_stream(response))  # type: ignore[return-value]


async def test_a_run_is_a_span_with_genai_attributes_under_the_request_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    backend = ModelBackend([TextDelta("Hel"), Pause(0.02), TextDelta("lo"), UsageEvent(7, 2), FinishEvent("stop")])
    relay = Relay(backend, otel_settings())
    async with served(relay) as http:
        headers, frames = await chat(http, "hi", traceparent=TRACEPARENT)
    assert frames[-1]["done"] is True
    (span,) = await run_spans(spans)
    assert span.name == "chat gpt-test"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-test"
    assert attrs["gen_ai.usage.input_tokens"] == 7
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["server.address"] == "api.example.com"
    assert attrs["server.port"] == 443
    assert attrs["tokenrelay.run_id"] == headers["x-run-id"]
    assert attrs["tokenrelay.conversation_id"] == headers["x-conversation-id"]
    assert attrs["user.id"] == "alice"
    # The run is in the request's trace, under the request's span (FastAPI's own, where it traces requests).
    assert format(span.context.trace_id, "032x") == TRACE_ID
    chain = ancestors(span, spans.get_finished_spans())
    assert format(chain[-1], "016x") == PARENT_ID
    if any(s.kind is SpanKind.SERVER for s in spans.get_finished_spans()):
        (request,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
        assert request.context.span_id in chain
    assert span.status.status_code is StatusCode.UNSET
    (first,) = [e for e in span.events if e.name == "gen_ai.first_token"]
    ttft = (first.attributes or {})["gen_ai.server.time_to_first_token"]
    assert isinstance(ttft, float)
    assert 0 <= ttft < (span.end_time - span.start_time) / 1e9  # type: ignore[operator]
    # The span is current while the backend streams: its own instrumented calls are the run's children.
    assert backend.current_spans == [span.context.span_id]


async def test_without_request_tracing_the_traceparent_header_is_the_runs_parent(
    spans: InMemorySpanExporter,
) -> None:
    relay = Relay(ModelBackend([TextDelta("ok"), FinishEvent("stop")]), otel_settings())
    async with running_server(host_app(relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        body = {"message": "hi"}
        async with http.stream("POST", "/ai/api/chat/stream", json=body, headers={"traceparent": TRACEPARENT}) as r:
            assert r.status_code == 200
            await read_stream(r)
    (span,) = await run_spans(spans)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.span_id, "016x") == PARENT_ID


async def test_the_run_span_is_a_child_of_the_host_apps_request_span(spans: InMemorySpanExporter) -> None:
    """A host app instrumented with opentelemetry-instrumentation-asgi."""
    relay = Relay(ModelBackend([TextDelta("ok"), FinishEvent("stop")]), otel_settings())
    app = OpenTelemetryMiddleware(host_app(relay))
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        async with http.stream("POST", "/ai/api/chat/stream", json={"message": "hi"}) as response:
            assert response.status_code == 200
            await read_stream(response)
    (run,) = await run_spans(spans)
    await wait_for_async(lambda: any(s.kind is SpanKind.SERVER for s in spans.get_finished_spans()), timeout=10,
                         what="the request's span")  # fmt: skip
    (request,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert run.parent is not None
    assert run.parent.span_id == request.context.span_id
    assert run.context.trace_id == request.context.trace_id


async def test_a_cancelled_run_has_a_cancel_event(spans: InMemorySpanExporter) -> None:
    relay = Relay(ModelBackend([TextDelta("one"), Pause(60), TextDelta("never")]), otel_settings())
    async with served(relay) as http:
        async with http.stream("POST", "/api/chat/stream", json={"message": "hi"}) as response:
            run_id = response.headers["x-run-id"]
            async for line in response.aiter_lines():
                if "one" in line:
                    break
            cancelled = await http.post(f"/api/runs/{run_id}/cancel")
            assert cancelled.json()["cancelled"] is True
    (span,) = await run_spans(spans)
    assert [e.name for e in span.events] == ["gen_ai.first_token", "tokenrelay.cancelled"]
    assert (span.attributes or {})["gen_ai.response.finish_reasons"] == ("cancelled",)
    assert span.status.status_code is StatusCode.UNSET


async def test_a_failed_run_has_an_error_event_and_status(spans: InMemorySpanExporter) -> None:
    failure = BackendError("rate_limited", "slow down", retryable=True)
    relay = Relay(ModelBackend([TextDelta("one"), failure]), otel_settings())
    async with served(relay) as http:
        _, frames = await chat(http, "hi")
    assert frames[-2]["error"]["code"] == "rate_limited"  # type: ignore[index]
    (span,) = await run_spans(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "rate_limited"
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "rate_limited"
    assert attrs["gen_ai.response.finish_reasons"] == ("error",)
    (error,) = [e for e in span.events if e.name == "tokenrelay.error"]
    assert dict(error.attributes or {}) == {
        "error.type": "rate_limited",
        "error.message": "slow down",
        "error.retryable": True,
    }


async def test_an_in_process_backend_without_a_model_name_is_an_internal_span(spans: InMemorySpanExporter) -> None:
    relay = Relay(ScriptedBackend([TextDelta("ok"), FinishEvent("stop")]), otel_settings())
    async with served(relay) as http:
        await chat(http, "hi")
    (span,) = await run_spans(spans)
    assert span.name == "chat"
    assert span.kind is SpanKind.INTERNAL
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.provider.name"] == "tokenrelay.scripted"
    assert "gen_ai.request.model" not in attrs
    assert ancestors(span, spans.get_finished_spans())[-1:] != [int(PARENT_ID, 16)]  # no traceparent sent


async def test_tracing_is_off_unless_asked_for(spans: InMemorySpanExporter) -> None:
    backend = ModelBackend([TextDelta("ok"), FinishEvent("stop")])
    relay = Relay(backend, Settings(backend="synthetic", history="memory"))
    assert relay.tracing is None
    async with running_server(host_app(relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        body = {"message": "hi"}
        async with http.stream("POST", "/ai/api/chat/stream", json=body, headers={"traceparent": TRACEPARENT}) as r:
            frames = payloads(await read_stream(r))
    assert frames[-1]["done"] is True
    assert spans.get_finished_spans() == ()
    assert backend.current_spans == [0]  # no span current in the run either (0: the invalid span's id)


def test_otel_without_the_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "tokenrelay.observability.tracing")
    with pytest.raises(ConfigError, match=r"--otel needs opentelemetry-api.*pip install 'tokenrelay\[otel\]'"):
        Relay(ScriptedBackend([]), otel_settings())


def test_the_otel_flag() -> None:
    from tokenrelay.cli import _add_settings_flags

    parser = argparse.ArgumentParser()
    _add_settings_flags(parser)
    assert Settings(**vars(parser.parse_args(["--otel"]))).otel is True
    assert Settings(**vars(parser.parse_args(["--otel", "false"]))).otel is False
    assert Settings(**vars(parser.parse_args([]))).otel is False
    with pytest.raises(ValueError, match="otel"):
        Settings(**vars(parser.parse_args(["--otel", "maybe"])))
