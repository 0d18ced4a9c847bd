"""An instance stopped mid-run, with two real ``tokenrelay serve`` processes on a redis-server of the suite's own:
SIGKILL (the viewer on the other instance is told the run was interrupted) and SIGTERM (it sees the same clean
shutdown end as the owner's own viewers). Both share the default SQLite history file.

After each, the invariant: every viewer got a done frame, the survivor has no run and no subscriber left, and the
saved answer is what the viewers saw.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from tests.faults.conftest import FIGURES
from tests.faults.processes import Payload, ServeProcess, read_payloads, serve_processes, text
from tests.own_redis import RedisProcess

LIVENESS_S = 1.5
USER = "u"
# A long answer, still going when the signal comes: 400 words, one every 20 ms.
FLAGS = ("--backend", "synthetic", "--synthetic-tokens", "400", "--synthetic-interval-ms", "20")


def env_for(redis: RedisProcess, prefix: str) -> dict[str, str]:
    return {
        "TOKENRELAY_STORE": "redis",
        "TOKENRELAY_REDIS_URL": redis.url,
        "TOKENRELAY_REDIS_PREFIX": prefix,
        "TOKENRELAY_LIVENESS_S": str(LIVENESS_S),
    }


async def watch(client: httpx.AsyncClient, url: str, run_id: str, after: str = "0") -> list[Payload]:
    params, headers = {"user_id": USER}, {"last-event-id": after}
    async with client.stream("GET", f"{url}/api/runs/{run_id}/stream", params=params, headers=headers) as r:
        return await read_payloads(r)


async def start_and_hit(
    client: httpx.AsyncClient, owner: ServeProcess, other: ServeProcess, conversation_id: str, signum: signal.Signals
) -> tuple[str, list[Payload], list[Payload], float]:
    """A run on ``owner`` read there, a viewer of it on ``other``; ``signum`` sent to the owner at the 10th delta
    its viewer sees. Returns the run id, both viewers' frames and how long the other viewer took to end after it."""
    body = {"message": "hi", "user_id": USER, "conversation_id": conversation_id}
    sent: list[float] = []

    def on_delta(n: int) -> None:
        if n == 10:
            owner.signal(signum)
            sent.append(time.monotonic())

    async with client.stream("POST", f"{owner.url}/api/chat/stream", json=body) as r:
        run_id = r.headers["x-run-id"]
        elsewhere = asyncio.create_task(watch(client, other.url, run_id))
        on_owner = await read_payloads(r, on_delta, cut_ok=signum == signal.SIGKILL)
    on_other = await asyncio.wait_for(elsewhere, 20)
    assert sent, "the run ended before the signal was sent"
    return run_id, on_owner, on_other, time.monotonic() - sent[0]


async def settled(client: httpx.AsyncClient, survivor: ServeProcess) -> None:
    """Until the survivor has no run and no subscriber left (each check is a request answered)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        health = (await client.get(f"{survivor.url}/api/health")).json()
        if (health["active_runs"], health["subscribers"]) == (0, 0):
            return
        assert loop.time() < deadline, health
        await asyncio.sleep(0.05)


async def saved(client: httpx.AsyncClient, url: str, conversation_id: str) -> dict[str, object]:
    r = await client.get(f"{url}/api/conversations/{conversation_id}/messages", params={"user_id": USER})
    assert r.status_code == 200, r.text
    last: dict[str, object] = r.json()["messages"][-1]
    assert last["role"] == "assistant", last
    return last


def count(fault: str, viewers: list[list[Payload]], answer: str) -> None:
    FIGURES.fault(fault)
    FIGURES.runs_checked += 1
    FIGURES.viewers_checked += len(viewers)
    lost = any(text(frames) != answer for frames in viewers)
    FIGURES.answers_lost += lost
    assert not lost, (answer, [text(f) for f in viewers])


async def test_sigkill_of_the_owner_a_viewer_elsewhere_is_told_and_the_partial_answer_is_saved(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    async with (
        httpx.AsyncClient(timeout=20) as client,
        serve_processes(tmp_path, client, 2, *FLAGS, env=env_for(own_redis, "faults-kill:")) as [a, b],
    ):
        run_id, on_a, on_b, took = await start_and_hit(client, a, b, "c-kill", signal.SIGKILL)
        assert await a.wait() == -signal.SIGKILL
        assert took < LIVENESS_S + 2.5, took  # noticed within the liveness window, not "for ever"
        error, done = on_b[-2], on_b[-1]
        assert error.get("error", {}).get("code") == "interrupted", on_b[-3:]
        assert error["error"]["retryable"] is True
        assert (done["done"], done["finish_reason"]) == (True, "error")
        assert "saved" not in done  # the survivor saved the partial answer
        # The owner's viewer was cut with its server; it resumes on the survivor from its last id.
        assert on_a
        assert "done" not in on_a[-1]
        rest = await watch(client, b.url, run_id, after=str(on_a[-1]["id"]))
        on_a += rest
        assert on_a[-1]["done"] is True
        await settled(client, b)
        last = await saved(client, b.url, "c-kill")
        assert (last["status"], last["error_code"]) == ("failed", "interrupted")
        assert last["content"]
        assert text(on_b).startswith("You said: hi.")
        count("sigkill, 2 instances", [on_a, on_b], str(last["content"]))


async def test_sigterm_of_the_owner_a_viewer_elsewhere_sees_the_same_clean_shutdown_end(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    flags = (*FLAGS, "--shutdown-grace-s", "0.3")
    async with (
        httpx.AsyncClient(timeout=20) as client,
        serve_processes(tmp_path, client, 2, *flags, env=env_for(own_redis, "faults-term:")) as [a, b],
    ):
        _, on_a, on_b, took = await start_and_hit(client, a, b, "c-term", signal.SIGTERM)
        assert await a.wait() == 0, a.stderr()
        assert took < 5, took
        for frames in (on_a, on_b):
            error, done = frames[-2], frames[-1]
            assert error.get("error", {}).get("code") == "shutdown", frames[-3:]
            assert error["error"]["retryable"] is True
            assert (done["done"], done["finish_reason"]) == (True, "error")
            assert "saved" not in done
        assert on_a[-2:] == on_b[-2:]  # the same end, under the same ids, on both instances
        assert "Traceback" not in a.stderr(), a.stderr()
        await settled(client, b)
        last = await saved(client, b.url, "c-term")
        assert (last["status"], last["error_code"]) == ("failed", "shutdown")
        count("sigterm, 2 instances", [on_a, on_b], str(last["content"]))
