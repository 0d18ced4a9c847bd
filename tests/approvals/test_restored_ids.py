"""A paused run rebuilt from the history after an in-memory store restarted keeps the event ids its viewers saw: the
pause keeps its id, so a resume from it gets exactly the continuation, and one from before it the answer so far
from its start, once. Two servers one after the other on the same SQLite file, through real uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.approvals.helpers import CALL, Follower, keys, until_paused
from tests.conftest import running_server, wait_for_async
from tests.test_metrics import scrape
from tokenrelay.backends.scripted import Approval, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings, create_app


def backend(record: Path) -> ScriptedBackend:
    """Three deltas (which the saved answer joins into one part), the call to approve, one more delta."""
    return ScriptedBackend(
        [
            TextDelta("Let "),
            TextDelta("me "),
            TextDelta("delete it."),
            Approval(CALL, "delete_file", "{}", output="deleted", record=str(record)),
            TextDelta(" Done."),
            FinishEvent("stop"),
        ]
    )


def relay_on(db: Path, record: Path) -> Relay:
    return Relay(backend(record), Settings(backend="synthetic", database_url=f"sqlite+aiosqlite:///{db}"))


async def follow(client: httpx.AsyncClient, run_id: str, last_event_id: int) -> list[tuple[str, dict[str, Any]]]:
    headers = {"last-event-id": str(last_event_id)}
    follower = Follower(client, "GET", f"/api/runs/{run_id}/stream?user_id=ann", headers=headers)
    try:
        await follower.done()
    finally:
        await follower.close()
    return follower.frames


def text(frames: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(str(payload["delta"]) for _, payload in frames if "delta" in payload)


async def test_a_run_rebuilt_from_the_history_keeps_the_ids_its_viewers_saw(tmp_path: Path) -> None:
    db, record = tmp_path / "history.db", tmp_path / "calls"
    first = relay_on(db, record)
    async with running_server(create_app(relay=first)) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        run_id, follower = await until_paused(client)
        try:
            await wait_for_async(lambda: first.runs.active_runs == 0, timeout=10, what="the pause to be saved")
        finally:
            await follower.close()
        pause_id = int(next(seq for seq, payload in follower.frames if "paused" in payload))
    assert pause_id == 7  # three deltas, the call's start and arguments, the request, the pause

    # The restarted server has nothing of the run in its store, only the history's waiting answer.
    second = relay_on(db, record)
    async with running_server(create_app(relay=second)) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        answer = {"tool_call_id": CALL, "approved": True}
        resumed = await client.post(f"/api/runs/{run_id}/approvals?user_id=ann", json=answer)
        assert resumed.json()["status"] == "resumed", resumed.text
        after_pause = await follow(client, run_id, pause_id)
        from_before = await follow(client, run_id, 2)
        whole = await follow(client, run_id, 0)
        waiting = scrape(second.metrics.render().decode())[("tokenrelay_waiting_runs", ())]
    assert waiting == 0  # taken back from the history, then resumed: nothing waits

    # From the pause: exactly the continuation, under the next ids.
    assert keys([p for _, p in after_pause]) == ["approval", "tool_result", "delta", "done"]
    assert [int(seq) for seq, _ in after_pause[:3]] == [pause_id + 1, pause_id + 2, pause_id + 3]
    assert text(after_pause) == " Done."
    # From an id before the pause: the answer so far from its start, once, then the same continuation.
    assert text(from_before) == "Let me delete it. Done."
    assert from_before[-4:] == after_pause
    assert keys([p for _, p in whole]) == [
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
    assert text(whole) == "Let me delete it. Done."
    assert whole[4][0] == str(pause_id)
