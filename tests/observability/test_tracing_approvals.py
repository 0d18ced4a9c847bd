"""A run paused for a tool call's approval: its span ends at the pause, and its continuation has a span of its own."""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.approvals.helpers import CALL, approval_script, tool_runs, until_paused
from tests.conftest import running_server
from tests.observability.test_tracing import otel_settings, run_spans
from tokenrelay.server import Relay, create_app


async def test_a_pause_ends_the_span_and_the_continuation_is_a_span_of_its_own(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    record = tmp_path / "calls"
    relay = Relay(approval_script(record), otel_settings())
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        run_id, follower = await until_paused(client)
        try:
            (paused,) = await run_spans(spans)  # ended at the pause: no span waits open for a person
            answer = {"tool_call_id": CALL, "approved": True}
            response = await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json=answer)
            assert response.json()["status"] == "resumed"
            await follower.done()
        finally:
            await follower.close()
    first, second = await run_spans(spans, 2)
    assert first.context.span_id == paused.context.span_id
    assert tool_runs(record) == [CALL]
    assert [e.name for e in first.events] == ["gen_ai.first_token", "tokenrelay.paused"]
    assert dict(first.events[1].attributes or {}) == {"tokenrelay.approvals": 1}
    assert (first.attributes or {})["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert (second.attributes or {})["gen_ai.response.finish_reasons"] == ("stop",)
    assert (first.attributes or {})["tokenrelay.run_id"] == (second.attributes or {})["tokenrelay.run_id"] == run_id
    assert second.start_time is not None
    assert first.end_time is not None
    assert second.start_time >= first.end_time
