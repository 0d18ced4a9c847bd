"""A remote backend's run span, against recorded OpenAI bytes replayed by a local server: the upstream's latency."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.backends.providers import openai_chat
from tests.backends.replay import ReplayServer
from tests.conftest import running_server
from tests.observability.test_tracing import host_app, otel_settings, run_spans
from tests.server.helpers import payloads, read_stream
from tokenrelay.server import Relay


async def test_the_span_of_an_openai_run_has_the_upstreams_time_to_first_byte(spans: InMemorySpanExporter) -> None:
    async with ReplayServer() as replay:
        replay.reply("openai_chat/text.sse")
        relay = Relay(openai_chat(replay), otel_settings(backend="openai"))
        async with running_server(host_app(relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
            async with http.stream("POST", "/ai/api/chat/stream", json={"message": "Capital of France?"}) as r:
                frames = payloads(await read_stream(r))
    assert frames[-1]["done"] is True
    (span,) = await run_spans(spans)
    assert span.name == "chat gpt-4.1-mini"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == replay.port
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (24, 8)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    names = [e.name for e in span.events]
    assert names == ["tokenrelay.upstream_responded", "gen_ai.first_token"]
    upstream, first = span.events
    ttfb = (upstream.attributes or {})["tokenrelay.upstream.time_to_first_byte"]
    ttft = (first.attributes or {})["gen_ai.server.time_to_first_token"]
    assert isinstance(ttfb, float)
    assert isinstance(ttft, float)
    assert 0 < ttfb <= ttft  # the response head comes before the first token is read from its body
    assert attrs["tokenrelay.upstream.time_to_first_byte"] == ttfb
