"""Tool approval under the defaults (memory run store, SQLite history), through real uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.approvals.helpers import ARGS, CALL, approval_script, keys, tool_runs, until_paused
from tests.conftest import running_server, wait_for_async
from tokenrelay.backends.base import Backend
from tokenrelay.server import Relay, Settings, create_app


@asynccontextmanager
async def serve(backend: Backend, **settings: object) -> AsyncIterator[tuple[httpx.AsyncClient, Relay]]:
    relay = Relay(backend, Settings(backend="synthetic", **settings))  # type: ignore[arg-type]
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        yield client, relay


async def test_a_paused_run_waits_holding_nothing_and_goes_on_when_approved(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, relay):
        run_id, follower = await until_paused(client)
        try:
            request = await follower.until("approval_request")
            assert request["approval_request"] == {"id": CALL, "name": "delete_file", "arguments": ARGS}
            paused = await follower.until("paused")
            assert paused["paused"]["expires_at"] > 0
            info = await relay.store.get(run_id)
            assert info is not None
            assert info.status == "waiting"
            # Once its answer so far is saved: no task, no model call; the run is the store's alone.
            await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the pause to be recorded")
            assert tool_runs(record) == []
            answer = {"tool_call_id": CALL, "approved": True}
            r = await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json=answer)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "resumed"
            payloads = await follower.done()
        finally:
            await follower.close()
        assert keys(payloads) == [
            "delta",
            "tool_call",
            "tool_call_delta",
            "approval_request",
            "paused",
            "approval",
            "tool_result",
            "delta",
            "done",
        ]
        assert payloads[6]["tool_result"] == {"id": CALL, "output": "deleted notes.txt", "is_error": False}
        assert payloads[-1]["finish_reason"] == "stop"
        assert tool_runs(record) == [CALL]
        # The same answer again is one; another answer is a conflict.
        again = await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json=answer)
        assert again.status_code == 200
        assert again.json()["status"] == "unchanged"
        other = await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json={**answer, "approved": False})
        assert other.status_code == 409
        assert tool_runs(record) == [CALL]
        conversation = payloads[-1]["conversation_id"]
        history = (await client.get(f"/api/conversations/{conversation}/messages?user_id=ann")).json()["messages"]
        answer_message = history[-1]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert answer_message["status"] == "complete"
        assert answer_message["content"] == "Let me delete it. Done."
        approval = next(p for p in answer_message["parts"] if p["type"] == "tool-approval")
        assert approval["approved"] is True


async def test_a_denied_call_never_reaches_the_tool_and_the_model_gets_the_denial(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, _):
        run_id, follower = await until_paused(client)
        try:
            deny = {"tool_call_id": CALL, "approved": False, "reason": "keep it"}
            r = await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json=deny)
            assert r.status_code == 200, r.text
            payloads = await follower.done()
        finally:
            await follower.close()
        assert {"approval": {"id": CALL, "approved": False, "reason": "keep it"}} in payloads
        result = next(p["tool_result"] for p in payloads if "tool_result" in p)
        assert result["is_error"] is True
        assert result["output"] == "The user denied this tool call. Reason: keep it"
        assert tool_runs(record) == []


async def test_only_the_runs_user_can_answer_and_bad_answers_are_refused(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, _):
        run_id, follower = await until_paused(client)
        try:
            url = f"/api/runs/{run_id}/approvals"
            answer = {"tool_call_id": CALL, "approved": True}
            assert (await client.post(f"{url}?user_id=bob", json=answer)).status_code == 404
            assert (await client.post("/api/runs/nope/approvals?user_id=ann", json=answer)).status_code == 404
            unknown = await client.post(f"{url}?user_id=ann", json={"tool_call_id": "other", "approved": True})
            assert unknown.status_code == 404
            bad = await client.post(f"{url}?user_id=ann", json={"tool_call_id": CALL, "approved": "yes"})
            assert bad.status_code == 422
            assert bad.json()["error"]["field"] == "approved"
            missing = await client.post(f"{url}?user_id=ann", json={"approved": True})
            assert missing.status_code == 422
            assert tool_runs(record) == []
        finally:
            await follower.close()


async def test_twice_at_once_the_tool_runs_exactly_once(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, _):
        run_id, follower = await until_paused(client)
        try:
            url = f"/api/runs/{run_id}/approvals?user_id=ann"
            answer = {"tool_call_id": CALL, "approved": True}
            replies = await asyncio.gather(*(client.post(url, json=answer) for _ in range(5)))
            assert [r.status_code for r in replies] == [200] * 5
            assert sorted(r.json()["status"] for r in replies) == ["resumed"] + ["unchanged"] * 4
            payloads = await follower.done()
        finally:
            await follower.close()
        assert payloads[-1]["finish_reason"] == "stop"
        assert tool_runs(record) == [CALL]


async def test_an_unanswered_run_expires_and_never_reaches_the_tool(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record), approval_expiry_s=0.5) as (client, _):
        run_id, follower = await until_paused(client)
        try:
            payloads = await follower.done()
        finally:
            await follower.close()
        assert keys(payloads)[-2:] == ["error", "done"]
        assert payloads[-2]["error"]["code"] == "approval_expired"
        assert payloads[-1]["finish_reason"] == "error"
        late = await client.post(
            f"/api/runs/{run_id}/approvals?user_id=ann", json={"tool_call_id": CALL, "approved": True}
        )
        assert late.status_code == 404
        assert late.json()["error"]["code"] == "approval_expired"
        assert tool_runs(record) == []
        conversation = payloads[-1]["conversation_id"]
        history = (await client.get(f"/api/conversations/{conversation}/messages?user_id=ann")).json()["messages"]
        assert [m["status"] for m in history] == ["complete", "failed"]
        assert history[-1]["error_code"] == "approval_expired"


async def test_stop_on_a_waiting_run_ends_it_and_its_call_never_runs(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, relay):
        run_id, follower = await until_paused(client)
        try:
            await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the pause to be recorded")
            stop = await client.post(f"/api/runs/{run_id}/cancel?user_id=ann")
            assert stop.status_code == 200
            assert stop.json()["cancelled"] is True
            payloads = await follower.done()
        finally:
            await follower.close()
        assert keys(payloads)[-3:] == ["approval_request", "paused", "done"]
        assert payloads[-1]["finish_reason"] == "cancelled"
        late = await client.post(
            f"/api/runs/{run_id}/approvals?user_id=ann", json={"tool_call_id": CALL, "approved": True}
        )
        assert late.status_code == 404
        assert tool_runs(record) == []
        again = await client.post(f"/api/runs/{run_id}/cancel?user_id=ann")
        assert again.json()["cancelled"] is False
        conversation = payloads[-1]["conversation_id"]
        history = (await client.get(f"/api/conversations/{conversation}/messages?user_id=ann")).json()["messages"]
        assert [m["status"] for m in history] == ["complete", "cancelled"]
