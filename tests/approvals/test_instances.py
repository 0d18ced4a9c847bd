"""Tool approval across real ``tokenrelay serve`` processes sharing a redis-server of the test's own: the answer on
the OTHER instance, on two instances at once, after the starting instance was SIGKILLed (and another started), and
an unanswered run expiring. The tool is the script's: it appends a line to a file each time it really runs."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.approvals.helpers import CALL, Follower, keys, tool_runs, until_paused
from tests.faults.processes import ServeProcess, serve_processes
from tests.own_redis import RedisProcess

USER = "ann"


def script(tmp_path: Path) -> tuple[Path, Path]:
    """The script file (a delete that needs approval) and the file its tool records each run in."""
    record = tmp_path / "tool-calls"
    steps: list[dict[str, Any]] = [
        {"type": "text-delta", "text": "Let me delete it."},
        {"approval": {"call_id": CALL, "name": "delete_file", "arguments": '{"path": "a"}', "record": str(record)}},
        {"type": "text-delta", "text": " Done."},
        {"type": "finish", "reason": "stop"},
    ]
    path = tmp_path / "script.json"
    path.write_text(json.dumps(steps))
    return path, record


def flags(script_path: Path) -> tuple[str, ...]:
    return ("--backend", "synthetic", "--synthetic-script", str(script_path))


def env_for(redis: RedisProcess, **extra: str) -> dict[str, str]:
    return {
        "TOKENRELAY_STORE": "redis",
        "TOKENRELAY_REDIS_URL": redis.url,
        "TOKENRELAY_REDIS_PREFIX": f"t{secrets.token_hex(4)}:",
        "TOKENRELAY_LIVENESS_S": "1",
        **extra,
    }


async def paused_run(client: httpx.AsyncClient, url: str) -> tuple[str, Follower]:
    return await until_paused(client, url, message="delete a", user_id=USER)


async def approve(client: httpx.AsyncClient, url: str, run_id: str, approved: bool = True) -> httpx.Response:
    body = {"tool_call_id": CALL, "approved": approved}
    return await client.post(f"{url}/api/runs/{run_id}/approvals", params={"user_id": USER}, json=body)


async def watch(client: httpx.AsyncClient, url: str, run_id: str) -> list[dict[str, Any]]:
    follower = Follower(client, "GET", f"{url}/api/runs/{run_id}/stream", params={"user_id": USER})
    try:
        return await follower.done(30)
    finally:
        await follower.close()


async def test_approved_on_the_other_instance_the_run_goes_on_for_every_viewer(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    path, record = script(tmp_path)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        serve_processes(tmp_path, client, 2, *flags(path), env=env_for(own_redis)) as (a, b),
    ):
        run_id, on_a = await paused_run(client, a.url)
        try:
            on_b = asyncio.create_task(watch(client, b.url, run_id))  # a viewer on B, waiting with the run
            assert tool_runs(record) == []
            r = await approve(client, b.url, run_id)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "resumed"
            seen_on_a = await on_a.done(30)
        finally:
            await on_a.close()
        seen_on_b = await asyncio.wait_for(on_b, 30)
        assert keys(seen_on_a)[-4:] == ["approval", "tool_result", "delta", "done"]
        assert seen_on_a[-1]["finish_reason"] == "stop"
        assert seen_on_b == seen_on_a  # the same log, read on the other instance
        assert tool_runs(record) == [CALL]
        conversation = seen_on_a[-1]["conversation_id"]
        for url in (a.url, b.url):
            messages = (await client.get(f"{url}/api/conversations/{conversation}/messages?user_id={USER}")).json()
            assert [m["status"] for m in messages["messages"]] == ["complete", "complete"]
            assert messages["messages"][-1]["content"] == "Let me delete it. Done."
        # Another user cannot answer, on either instance.
        assert (await client.post(f"{b.url}/api/runs/{run_id}/approvals?user_id=bob", json={})).status_code in (
            404,
            422,
        )
        other = await client.post(
            f"{b.url}/api/runs/{run_id}/approvals?user_id=bob", json={"tool_call_id": CALL, "approved": True}
        )
        assert other.status_code == 404


async def test_approved_on_two_instances_at_once_the_tool_runs_exactly_once(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    path, record = script(tmp_path)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        serve_processes(tmp_path, client, 2, *flags(path), env=env_for(own_redis)) as (a, b),
    ):
        run_id, follower = await paused_run(client, a.url)
        try:
            replies = await asyncio.gather(*(approve(client, url, run_id) for url in [a.url, b.url] * 4))
            seen = await follower.done(30)
        finally:
            await follower.close()
        assert [r.status_code for r in replies] == [200] * 8
        assert sorted(r.json()["status"] for r in replies) == ["resumed"] + ["unchanged"] * 7
        assert seen[-1]["finish_reason"] == "stop"
        assert keys(seen).count("tool_result") == 1
        assert tool_runs(record) == [CALL]
        denied = await approve(client, b.url, run_id, approved=False)
        assert denied.status_code == 409


async def test_after_the_starting_instance_was_killed_a_new_one_resumes_the_run(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    path, record = script(tmp_path)
    env = env_for(own_redis)
    async with httpx.AsyncClient(timeout=30) as client:
        async with serve_processes(tmp_path, client, 1, *flags(path), env=env) as (a,):
            run_id, follower = await paused_run(client, a.url)
            await follower.close()
            a.signal(signal.SIGKILL)
            await a.wait()
        await asyncio.sleep(2.5)  # longer than the liveness period: a dead owner's running runs would be ended now
        restarted = ServeProcess(tmp_path / "restarted.log", *flags(path), env=env)
        try:
            await restarted.ready(client)
            viewer = asyncio.create_task(watch(client, restarted.url, run_id))
            r = await approve(client, restarted.url, run_id)
            assert r.status_code == 200, r.text
            seen = await asyncio.wait_for(viewer, 30)
        finally:
            restarted.stop()
        assert keys(seen) == [
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
        assert seen[-1]["finish_reason"] == "stop"
        assert tool_runs(record) == [CALL]


async def test_an_unanswered_run_expires_on_redis_and_never_reaches_the_tool(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    path, record = script(tmp_path)
    env = env_for(own_redis, TOKENRELAY_APPROVAL_EXPIRY_S="1")
    async with (
        httpx.AsyncClient(timeout=30) as client,
        serve_processes(tmp_path, client, 2, *flags(path), env=env) as (a, b),
    ):
        run_id, follower = await paused_run(client, a.url)
        try:
            seen = await follower.done(30)
        finally:
            await follower.close()
        assert keys(seen)[-2:] == ["error", "done"]
        assert seen[-2]["error"]["code"] == "approval_expired"
        late = await approve(client, b.url, run_id)
        assert late.status_code == 404
        assert late.json()["error"]["code"] == "approval_expired"
        assert tool_runs(record) == []
        conversation = seen[-1]["conversation_id"]
        messages = (await client.get(f"{b.url}/api/conversations/{conversation}/messages?user_id={USER}")).json()
        assert [m["status"] for m in messages["messages"]] == ["complete", "failed"]


async def test_a_memory_store_server_restarted_on_the_same_sqlite_file_resumes_the_run(tmp_path: Path) -> None:
    path, record = script(tmp_path)
    async with httpx.AsyncClient(timeout=30) as client:
        async with serve_processes(tmp_path, client, 1, *flags(path)) as (a,):
            run_id, follower = await paused_run(client, a.url)
            assert follower.headers is not None
            conversation_id = follower.headers["x-conversation-id"]
            await follower.close()
            messages_url = f"/api/conversations/{conversation_id}/messages?user_id={USER}"
            for _ in range(200):  # the answer so far is saved just after the pause
                statuses = [m["status"] for m in (await client.get(a.url + messages_url)).json()["messages"]]
                if statuses == ["complete", "waiting"]:
                    break
                await asyncio.sleep(0.05)
            assert statuses == ["complete", "waiting"]
            a.signal(signal.SIGKILL)
            await a.wait()
        restarted = ServeProcess(tmp_path / "restarted.log", *flags(path))
        try:
            await restarted.ready(client)
            assert (await approve(client, restarted.url, run_id + "x")).status_code == 404
            r = await approve(client, restarted.url, run_id)
            assert r.status_code == 200, r.text + restarted.stderr()
            assert r.json()["status"] == "resumed"
            seen = await watch(client, restarted.url, run_id)
            messages = (await client.get(restarted.url + messages_url)).json()["messages"]
        finally:
            restarted.stop()
    assert keys(seen)[-4:] == ["approval", "tool_result", "delta", "done"]
    assert seen[-1]["finish_reason"] == "stop"
    assert tool_runs(record) == [CALL]
    assert [m["status"] for m in messages] == ["complete", "complete"]
    assert messages[-1]["content"] == "Let me delete it. Done."


async def test_stop_on_the_other_instance_ends_a_waiting_run_on_redis(tmp_path: Path, own_redis: RedisProcess) -> None:
    path, record = script(tmp_path)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        serve_processes(tmp_path, client, 2, *flags(path), env=env_for(own_redis)) as (a, b),
    ):
        run_id, follower = await paused_run(client, a.url)
        try:
            stop = await client.post(f"{b.url}/api/runs/{run_id}/cancel", params={"user_id": USER})
            assert stop.status_code == 200
            assert stop.json()["cancelled"] is True
            seen = await follower.done(30)
        finally:
            await follower.close()
        assert keys(seen)[-2:] == ["paused", "done"]
        assert seen[-1]["finish_reason"] == "cancelled"
        assert (await approve(client, a.url, run_id)).status_code == 404
        assert tool_runs(record) == []
        conversation = seen[-1]["conversation_id"]
        messages = (await client.get(f"{a.url}/api/conversations/{conversation}/messages?user_id={USER}")).json()
        assert [m["status"] for m in messages["messages"]] == ["complete", "cancelled"]
