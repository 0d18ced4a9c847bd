"""GET /metrics, end to end through real uvicorn: what a Prometheus scrape sees after real streams."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.approvals.helpers import CALL, approval_script, until_paused
from tests.conftest import running_server, wait_for_async
from tests.server.helpers import payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.backends.base import Backend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings, create_app


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def relay_for(backend: Backend) -> Relay:
    return Relay(backend, Settings(backend="synthetic", history="memory"))


async def test_metrics_count_tokens_runs_cancellations_and_errors() -> None:
    relay = relay_for(SyntheticBackend(tokens=6, interval_ms=1, token="ab"))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            data = payloads(await read_stream(r))
        assert "".join(str(d["delta"]) for d in data if "delta" in d) == "ab" * 6

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        m = scrape(response.text)
        # Six deltas were written, however many frames coalescing made of them.
        assert m[("tokenrelay_tokens_out_total", ())] == 6
        assert m[("tokenrelay_time_to_first_token_seconds_count", ())] == 1
        assert m[("tokenrelay_run_duration_seconds_count", (("reason", "stop"),))] == 1
        assert m[("tokenrelay_active_runs", ())] == 0
        assert m[("tokenrelay_subscribers", ())] == 0
        assert m[("tokenrelay_cancellations_total", ())] == 0


async def test_metrics_see_a_cancelled_run_an_error_and_live_streams() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(30), FinishEvent("stop")])
    relay = relay_for(backend)
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            run_id = r.headers["x-run-id"]
            chunks = r.aiter_raw()
            await chunks.__anext__()  # the first delta is out; the run is now waiting on its pause
            m = scrape((await client.get("/metrics")).text)
            assert m[("tokenrelay_active_runs", ())] == 1
            assert m[("tokenrelay_subscribers", ())] == 1
            assert (await client.post(f"/api/runs/{run_id}/cancel")).json()["cancelled"] is True
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=5, what="the run to end")
        m = scrape((await client.get("/metrics")).text)
        assert m[("tokenrelay_cancellations_total", ())] == 1
        assert m[("tokenrelay_run_duration_seconds_count", (("reason", "cancelled"),))] == 1

    failing = relay_for(SyntheticBackend(tokens=5, interval_ms=0, fail_after=2))
    async with running_server(create_app(relay=failing)) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            await read_stream(r)
        m = scrape((await client.get("/metrics")).text)
        assert m[("tokenrelay_errors_total", (("code", "backend_error"),))] == 1
        assert m[("tokenrelay_run_duration_seconds_count", (("reason", "error"),))] == 1


async def test_each_relay_has_its_own_registry() -> None:
    a, b = relay_for(SyntheticBackend(tokens=1)), relay_for(SyntheticBackend(tokens=1))
    assert a.metrics.registry is not b.metrics.registry
    async with running_server(create_app(relay=a)) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            await read_stream(r)
    assert a.runs.tokens_out == 1
    assert scrape(b.metrics.render().decode())[("tokenrelay_tokens_out_total", ())] == 0


def approval_counts(relay: Relay) -> dict[str, float]:
    m = scrape(relay.metrics.render().decode())
    ends = sum(v for (name, _), v in m.items() if name == "tokenrelay_run_duration_seconds_count")
    return {
        "paused": m[("tokenrelay_runs_paused_total", ())],
        "resumed": m[("tokenrelay_runs_resumed_total", ())],
        "waiting": m[("tokenrelay_waiting_runs", ())],
        "ended": ends,
        "cancelled": m[("tokenrelay_cancellations_total", ())],
    }


async def test_a_pause_counts_as_paused_and_the_resumed_run_ends_once(tmp_path: Path) -> None:
    relay = relay_for(approval_script(tmp_path / "calls"))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        assert approval_counts(relay) == {"paused": 0, "resumed": 0, "waiting": 0, "ended": 0, "cancelled": 0}
        run_id, follower = await until_paused(client)
        try:
            await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the pause to be recorded")
            assert approval_counts(relay) == {"paused": 1, "resumed": 0, "waiting": 1, "ended": 0, "cancelled": 0}
            answer = {"tool_call_id": CALL, "approved": True}
            assert (await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json=answer)).status_code == 200
            await follower.done()
        finally:
            await follower.close()
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the run to end")
        assert approval_counts(relay) == {"paused": 1, "resumed": 1, "waiting": 0, "ended": 1, "cancelled": 0}
        m = scrape(relay.metrics.render().decode())
        assert m[("tokenrelay_run_duration_seconds_count", (("reason", "stop"),))] == 1

        # A waiting run stopped: no longer waiting, ended once, as cancelled; never resumed.
        run_id, follower = await until_paused(client)
        try:
            await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the pause to be recorded")
            assert approval_counts(relay)["waiting"] == 1
            assert (await client.post(f"/api/runs/{run_id}/cancel?user_id=ann")).json()["cancelled"] is True
            await follower.done()
        finally:
            await follower.close()
        assert approval_counts(relay) == {"paused": 2, "resumed": 1, "waiting": 0, "ended": 2, "cancelled": 1}
