"""``metrics_router(relay)``: the /metrics of ``tokenrelay serve``, in a host app that mounts tokenrelay's router."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_server
from tests.server.helpers import host_app, read_stream
from tokenrelay.backends import ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings, create_router, metrics_router


def samples(text: str) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items()) if s.labels else ''}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_host_app_serves_the_relays_metrics_with_one_line() -> None:
    relay = Relay(ScriptedBackend([TextDelta("a"), TextDelta("b"), FinishEvent("stop")]), Settings(history="memory"))
    app = host_app(relay, create_router(relay), prefix="/ai")
    app.include_router(metrics_router(relay))  # the one line

    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        before = await http.get("/metrics")
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        assert samples(before.text)["tokenrelay_tokens_out_total"] == 0
        async with http.stream("POST", "/ai/api/chat/stream", json={"message": "hi"}) as response:
            assert response.status_code == 200
            await read_stream(response)
        await relay.runs.wait(response.headers["x-run-id"])
        after = samples((await http.get("/metrics")).text)
    assert after["tokenrelay_tokens_out_total"] >= 1
    assert after["tokenrelay_run_duration_seconds_count[('reason', 'stop')]"] == 1
    assert after["tokenrelay_time_to_first_token_seconds_count"] == 1
    assert after["tokenrelay_active_runs"] == 0


async def test_the_metrics_path_can_be_chosen() -> None:
    relay = Relay(ScriptedBackend([]), Settings(history="memory"))
    app = FastAPI()
    app.include_router(metrics_router(relay, path="/internal/metrics"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        assert (await http.get("/internal/metrics")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404


def test_a_path_without_its_slash_is_refused() -> None:
    relay = Relay(ScriptedBackend([]), Settings(history="memory"))
    with pytest.raises(ValueError, match="path: must start with '/'"):
        metrics_router(relay, path="metrics")
