"""The Redis store under faults, end to end: real uvicorn servers on a redis-server of the test's own, which is
paused past the client's socket timeout, killed, or restarted empty while a run streams.

After each fault the same invariant is checked: every run ended, every viewer got a done frame, no run and no
subscriber is left on any instance, and the history (the default SQLite one) holds exactly what the viewers saw.
The figures (faults tried, runs checked, answers lost) are printed at the end of the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import redis.asyncio as aioredis

from tests.conftest import wait_for_async
from tests.faults.conftest import FIGURES
from tests.faults.processes import Payload, read_payloads, text
from tests.own_redis import RedisProcess
from tests.server.helpers import serving
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.events import Event, FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings
from tokenrelay.stores.redis import RedisRunStore

WORDS = [f"w{i} " for i in range(60)]
ANSWER = "".join(WORDS)
PREFIX = "tokenrelay-faults:"
SOCKET_TIMEOUT_S = 0.5  # the client's timeout on every Redis call: a pause of 3x this outlasts it
LIVENESS_S = 1.5
UNAVAILABLE_S = 3.0
USER = "u"


def paced(gap: float = 0.02) -> ScriptedBackend:
    """An answer of 60 words, one every ``gap`` seconds: long enough to be hit by a fault mid-answer."""
    steps: list[Event | Pause] = []
    for word in WORDS:
        steps += [TextDelta(word), Pause(gap)]
    return ScriptedBackend([*steps, FinishEvent("stop")])


def relay_on(redis: RedisProcess) -> Relay:
    store = RedisRunStore(
        redis.url,
        prefix=PREFIX,
        liveness_s=LIVENESS_S,
        socket_timeout_s=SOCKET_TIMEOUT_S,
        unavailable_s=UNAVAILABLE_S,
        finish_timeout_s=2.0,
    )
    # The default history: SQLite, in the test's own file (tests/conftest.py points the settings at it).
    return Relay(paced(), Settings(backend="synthetic", store="redis"), store=store)


@asynccontextmanager
async def instances(redis: RedisProcess, n: int) -> AsyncIterator[list[tuple[Relay, httpx.AsyncClient]]]:
    """``n`` servers on one Redis, each with a client of its own."""
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(n):
            relay = relay_on(redis)
            host, port = await stack.enter_async_context(serving(relay))
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30))
            out.append((relay, client))
        yield out


async def watch_start(
    client: httpx.AsyncClient,
    conversation_id: str,
    fault: Callable[[], Awaitable[None]],
    *,
    at: int = 10,
    on_start: Callable[[str], None] | None = None,
) -> tuple[str, list[Payload]]:
    """Start a run and read it whole; ``on_start(run_id)`` once it has started (to add a viewer elsewhere), and
    ``fault`` started (not awaited) when the ``at``-th delta arrives, awaited once the stream has ended. Returns
    the run id and the frames."""
    tasks: list[asyncio.Task[None]] = []

    def on_delta(n: int) -> None:
        if n == at:
            tasks.append(asyncio.create_task(fault()))

    body = {"message": "hi", "user_id": USER, "conversation_id": conversation_id}
    async with client.stream("POST", "/api/chat/stream", json=body) as r:
        run_id = r.headers["x-run-id"]
        if on_start is not None:
            on_start(run_id)
        frames = await read_payloads(r, on_delta)
    for task in tasks:
        await task
    assert tasks, "the stream ended before the fault was injected"
    return run_id, frames


async def watch_resume(client: httpx.AsyncClient, run_id: str, after: str = "0") -> list[Payload]:
    headers = {"last-event-id": after}
    async with client.stream("GET", f"/api/runs/{run_id}/stream", params={"user_id": USER}, headers=headers) as r:
        return await read_payloads(r)


async def saved_answer(client: httpx.AsyncClient, conversation_id: str) -> str:
    r = await client.get(f"/api/conversations/{conversation_id}/messages", params={"user_id": USER})
    assert r.status_code == 200, r.text
    messages = r.json()["messages"]
    assert messages[-1]["role"] == "assistant", messages
    return str(messages[-1]["content"])


async def check_invariant(
    relays: list[Relay], client: httpx.AsyncClient, conversation_id: str, viewers: list[list[Payload]], fault: str
) -> str:
    """Every viewer got a done frame, nothing is left running or subscribed on any instance, and the saved answer
    is what each viewer saw. Counts the fault, the run and any lost answer in the figures; returns the answer."""
    FIGURES.fault(fault)
    FIGURES.runs_checked += 1
    FIGURES.viewers_checked += len(viewers)
    for frames in viewers:
        assert frames, "a viewer got nothing"
        assert frames[-1].get("done") is True, frames[-3:]
    await wait_for_async(
        lambda: all(r.runs.active_runs == 0 and r.runs.subscribers == 0 for r in relays),
        timeout=15,
        what="every run to end and every subscriber to leave",
    )
    saved = await saved_answer(client, conversation_id)
    lost = any(text(frames) != saved for frames in viewers)
    FIGURES.answers_lost += lost
    assert not lost, (saved, [text(f) for f in viewers])
    return saved


async def stored_status(redis: RedisProcess, run_id: str) -> tuple[str, int]:
    """The run's status and last sequence id as Redis has them."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        status, last = await client.hmget(f"{PREFIX}run:{{{run_id}}}:meta", ["status", "last_seq"])
    finally:
        await client.aclose()
    return (status or b"").decode(), int(last or 0)


async def test_paused_past_the_socket_timeout_mid_run_loses_nothing(own_redis: RedisProcess) -> None:
    async def pause() -> None:
        own_redis.pause()
        await asyncio.sleep(SOCKET_TIMEOUT_S * 3)  # the stall to outlast: waited out on purpose
        own_redis.resume()

    async with instances(own_redis, 1) as [(relay, client)]:
        run_id, frames = await watch_start(client, "c-pause", pause)
        assert text(frames) == ANSWER  # every event, no gap, no duplicate
        assert frames[-1]["done"] is True
        assert "error" not in frames[-2]
        await check_invariant([relay], client, "c-pause", [frames], "pause")
        status, last = await stored_status(own_redis, run_id)
        assert status == "finished"
        assert last == int(frames[-1]["id"])


async def test_restarted_empty_mid_run_the_owner_restores_the_run(own_redis: RedisProcess) -> None:
    async with instances(own_redis, 1) as [(relay, client)]:
        run_id, frames = await watch_start(client, "c-empty", own_redis.restart_empty)
        assert text(frames) == ANSWER
        await check_invariant([relay], client, "c-empty", [frames], "restart-empty")
        # Redis has the whole run again, under the same ids: a resume from the start gives the same answer.
        status, last = await stored_status(own_redis, run_id)
        assert status == "finished"
        assert last == int(frames[-1]["id"])
        assert isinstance(relay.store, RedisRunStore)
        relay.store._logs.clear()  # this instance's copy forgotten: the resume is read from Redis
        assert text(await watch_resume(client, run_id)) == ANSWER


async def test_killed_mid_run_the_run_ends_and_new_runs_get_503_until_it_is_back(own_redis: RedisProcess) -> None:
    async def kill() -> None:
        own_redis.kill()

    async with instances(own_redis, 1) as [(relay, client)]:
        run_id, frames = await watch_start(client, "c-kill", kill)
        # Redis is still down: the run ended anyway, its viewer had the whole answer from this instance.
        assert text(frames) == ANSWER
        await check_invariant([relay], client, "c-kill", [frames], "kill")
        r = await client.post("/api/chat/stream", json={"message": "again", "user_id": USER})
        assert r.status_code == 503, (r.status_code, r.text)
        assert "retry-after" in r.headers
        assert (await client.get("/api/health")).status_code != 200
        own_redis.start()
        await own_redis.ready()

        async def healthy() -> bool:
            return (await client.get("/api/health")).status_code == 200

        await wait_for_async_check(healthy, timeout=10, what="/api/health to recover")
        # The flusher wrote the run once Redis was back (restoring its keys): it is whole there too.
        await wait_for_async_check(
            lambda: _finished(own_redis, run_id, int(frames[-1]["id"])), timeout=10, what="the run in Redis"
        )


async def _finished(redis: RedisProcess, run_id: str, last_id: int) -> bool:
    return await stored_status(redis, run_id) == ("finished", last_id)


async def wait_for_async_check(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Until ``await check()`` is true (each check is a round trip), every 50 ms; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_two_instances_restarted_empty_viewers_on_both_see_the_whole_answer(
    own_redis: RedisProcess,
) -> None:
    async with instances(own_redis, 2) as [(relay_a, client_a), (relay_b, client_b)]:
        elsewhere: list[asyncio.Task[list[Payload]]] = []

        def on_start(run_id: str) -> None:
            elsewhere.append(asyncio.create_task(watch_resume(client_b, run_id)))

        run_id, frames_a = await watch_start(client_a, "c-two", own_redis.restart_empty, on_start=on_start)
        frames_b = await elsewhere[0]
        assert text(frames_a) == ANSWER
        assert text(frames_b) == ANSWER
        await check_invariant([relay_a, relay_b], client_a, "c-two", [frames_a, frames_b], "restart-empty, 2 instances")
        assert await stored_status(own_redis, run_id) == ("finished", int(frames_a[-1]["id"]))


async def test_two_instances_killed_a_viewer_elsewhere_gets_a_retryable_error_then_resumes(
    own_redis: RedisProcess,
) -> None:
    async with instances(own_redis, 2) as [(relay_a, client_a), (relay_b, client_b)]:
        elsewhere: list[asyncio.Task[list[Payload]]] = []

        async def kill() -> None:
            own_redis.kill()

        def on_start(run_id: str) -> None:
            elsewhere.append(asyncio.create_task(watch_resume(client_b, run_id)))

        run_id, frames_a = await watch_start(client_a, "c-two-kill", kill, on_start=on_start)
        frames_b = await elsewhere[0]  # Redis is still down: B cannot know more, and says so
        assert text(frames_a) == ANSWER
        assert frames_b[-2].get("error", {}).get("retryable") is True, frames_b[-2:]
        assert frames_b[-1]["done"] is True
        own_redis.start()
        await own_redis.ready()
        await wait_for_async_check(
            lambda: _finished(own_redis, run_id, int(frames_a[-1]["id"])), timeout=10, what="the run in Redis"
        )
        # The viewer on B resumes from the id of the error frame: exactly the rest of the answer.
        rest = await watch_resume(client_b, run_id, after=str(frames_b[-1]["id"]))
        resumed = [f for f in frames_b if "delta" in f] + rest
        await check_invariant([relay_a, relay_b], client_a, "c-two-kill", [frames_a, resumed], "kill, 2 instances")
