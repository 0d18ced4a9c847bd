"""The Redis run store against the real Redis: two stores in one process stand for two instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REDIS_URL, collect, texts, wait_for_async
from tests.stores.redis_helpers import eventually, raw_redis
from tokenrelay.backends import Message, Pause, ScriptedBackend
from tokenrelay.errors import RunFinishedError, StoreError
from tokenrelay.events import ErrorEvent, FinishEvent, TextDelta, UsageEvent
from tokenrelay.runs import RunManager, RunOutcome
from tokenrelay.stores import RunInfo, StoredEvent
from tokenrelay.stores.base import RunClosedError

if TYPE_CHECKING:
    from tokenrelay.stores.redis import RedisRunStore

HELLO = [Message("user", "hello")]


@asynccontextmanager
async def instance(prefix: str, **options: float) -> AsyncIterator[RedisRunStore]:
    from tokenrelay.stores.redis import RedisRunStore

    store = RedisRunStore(REDIS_URL, prefix=prefix, **options)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def info(run_id: str) -> RunInfo:
    return RunInfo(run_id, "u", "c", "test", 0.0)


def first_xread(store: RedisRunStore) -> asyncio.Event:
    """Set when ``store`` sends an ``XREAD`` (a tail reader's blocking read) for the first time."""
    sent = asyncio.Event()
    xread = store._tails._xread

    async def spy(*args: Any, **kwargs: Any) -> Any:
        sent.set()
        return await xread(*args, **kwargs)

    store._tails._xread = spy  # type: ignore[method-assign]
    return sent


async def test_ids_are_the_stream_ids_and_reads_are_exact_on_every_instance(redis_prefix: str) -> None:
    async with instance(redis_prefix) as a, instance(redis_prefix) as b:
        await a.create(info("r1"))
        assert await a.append("r1", [TextDelta("a"), TextDelta("b")]) == 2
        assert await a.append("r1", [UsageEvent(1, 2)]) == 3
        await a.append("r1", [FinishEvent("stop")])
        await a.finish("r1")
        for store in (a, b):
            for after in range(5):
                got = await store.read("r1", after, 1)
                assert [e.seq for e in got] == list(range(after + 1, 5))
        got = await b.read("r1", 0, 1)
        assert [e.event for e in got] == [TextDelta("a"), TextDelta("b"), UsageEvent(1, 2), FinishEvent("stop")]
        remote = await b.get("r1")
        assert remote is not None
        assert (remote.status, remote.last_seq, remote.user_id) == ("finished", 4, "u")
        # The stream's own ids are the sequence ids: exact on any instance, with no mapping to keep.
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        entries = await client.xrange(f"{redis_prefix}run:{{r1}}:events")
        assert [e[0] for e in entries] == [b"0-1", b"0-2", b"0-3", b"0-4"]
        # A finished run expires.
        ttl = await client.pttl(f"{redis_prefix}run:{{r1}}:events")
        assert 0 < ttl <= 600_000
        assert 0 < await client.pttl(f"{redis_prefix}run:{{r1}}:meta") <= 600_000
        await client.aclose()
        assert await b.get("nope") is None
        assert await b.read("nope", 0, 0.05) == []


async def test_a_finished_run_expires_after_its_ttl(redis_prefix: str) -> None:
    async with instance(redis_prefix, ttl_s=0.2, cache_s=0.0) as a, instance(redis_prefix) as b:
        await a.create(info("r1"))
        await a.append("r1", [FinishEvent()])
        await a.finish("r1")
        assert await b.get("r1") is not None

        async def gone() -> bool:
            return await b.get("r1") is None

        await eventually(gone, timeout=2, what="the finished run to expire")
        assert await gone()


async def test_a_reader_elsewhere_follows_live_and_appends_are_batched_without_delaying_the_first(
    redis_prefix: str,
) -> None:
    script = [TextDelta(str(i)) for i in range(300)]
    async with instance(redis_prefix) as a, instance(redis_prefix) as b:
        manager_a = RunManager(ScriptedBackend([TextDelta("first"), Pause(1.0), *script]), a)
        manager_b = RunManager(ScriptedBackend([]), b)
        started = asyncio.get_running_loop().time()
        run = await manager_a.start(HELLO, user_id="u", conversation_id="c")
        sub = await manager_b.subscribe(run.run_id)
        first = await asyncio.wait_for(sub.__anext__(), 5)
        assert isinstance(first, list)
        assert first[0] == StoredEvent(1, TextDelta("first"))
        # Not held back by any batching timer: long before the next event (generous, for a loaded machine).
        assert asyncio.get_running_loop().time() - started < 0.5
        rest = []
        async for item in sub:
            if isinstance(item, list):
                rest.extend(item)
        await sub.aclose()
        assert texts(rest) == "".join(str(i) for i in range(300))
        assert rest[-1] == StoredEvent(302, FinishEvent("stop"))
        # 300 events appended back to back went out in far fewer round trips than events.
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        assert await client.xlen(f"{redis_prefix}run:{{{run.run_id}}}:events") == 302
        await client.aclose()


async def test_cancel_from_another_instance_stops_the_run_where_it_runs(redis_prefix: str) -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with instance(redis_prefix) as a, instance(redis_prefix) as b:
        manager_a = RunManager(backend, a, on_disconnect="detach")
        manager_b = RunManager(ScriptedBackend([]), b)
        run = await manager_a.start(HELLO, user_id="u", conversation_id="c")
        await wait_for_async(lambda: backend.stats.started == 1, timeout=5, what="the run to start")
        assert await asyncio.wait_for(manager_b.cancel(run.run_id), 5) is True
        assert backend.cancelled.is_set()
        events = await collect(manager_b, run.run_id)
        assert events[-1].event == FinishEvent("cancelled")
        assert await manager_b.cancel(run.run_id) is False  # finished: nothing to cancel
        assert await manager_b.cancel("unknown") is False


@pytest.mark.parametrize("policy", ["cancel", "detach"])
async def test_the_last_viewer_leaving_another_instance_applies_the_owners_policy(
    redis_prefix: str, policy: str
) -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with instance(redis_prefix) as a, instance(redis_prefix) as b, instance(redis_prefix) as c:
        manager_a = RunManager(backend, a, on_disconnect=policy, detach_grace_s=0.2)
        manager_b = RunManager(ScriptedBackend([]), b)
        manager_c = RunManager(ScriptedBackend([]), c)
        run = await manager_a.start(HELLO, user_id="u", conversation_id="c")
        on_b = await manager_b.subscribe(run.run_id)
        on_c = await manager_c.subscribe(run.run_id)
        assert await a.viewers(run.run_id) == 2
        await asyncio.wait_for(on_b.__anext__(), 5)
        await on_b.aclose()  # someone still watches on C: nothing happens
        assert await a.viewers(run.run_id) == 1
        with pytest.raises(TimeoutError):
            # Longer than the grace: had A been told its viewers were gone, its policy would have acted by now.
            await asyncio.wait_for(backend.cancelled.wait(), 0.3)
        assert not backend.cancelled.is_set()
        await on_c.aclose()
        await asyncio.wait_for(backend.cancelled.wait(), 5)
        assert await a.viewers(run.run_id) == 0


async def test_a_viewer_back_on_another_instance_within_the_grace_keeps_a_detached_run(redis_prefix: str) -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(0.6), TextDelta("b"), FinishEvent()])
    async with instance(redis_prefix) as a, instance(redis_prefix) as b:
        manager_a = RunManager(backend, a, on_disconnect="detach", detach_grace_s=0.2)
        manager_b = RunManager(ScriptedBackend([]), b)
        run = await manager_a.start(HELLO, user_id="u", conversation_id="c")
        first = await manager_a.subscribe(run.run_id)
        await asyncio.wait_for(first.__anext__(), 5)
        await first.aclose()  # the grace starts on A...
        events = await asyncio.wait_for(collect(manager_b, run.run_id, after=1), 5)  # ...and the client is on B
        assert texts(events) == "b"
        assert not backend.cancelled.is_set()


async def test_a_dead_owner_is_noticed_and_every_reader_sees_the_same_ending(redis_prefix: str) -> None:
    outcomes: list[RunOutcome] = []

    async def record(outcome: RunOutcome) -> None:
        outcomes.append(outcome)

    backend = ScriptedBackend([TextDelta("part"), Pause(60)])
    async with instance(redis_prefix, liveness_s=0.6) as b, instance(redis_prefix, liveness_s=0.6) as c:
        from tokenrelay.stores.redis import RedisRunStore

        a = RedisRunStore(REDIS_URL, prefix=redis_prefix, liveness_s=0.6)
        await a.start()
        manager_a = RunManager(backend, a, on_disconnect="detach", on_finish=record)
        manager_b = RunManager(ScriptedBackend([]), b, on_finish=record)
        manager_c = RunManager(ScriptedBackend([]), c, on_finish=record)
        run = await manager_a.start(HELLO, user_id="u", conversation_id="conv")
        readers = [asyncio.create_task(collect(m, run.run_id)) for m in (manager_b, manager_c)]
        await wait_for_async(lambda: backend.stats.started == 1, timeout=5, what="the run to start")
        await wait_for_async(lambda: a._logs[run.run_id].events, timeout=2, what="the first delta to reach Redis")
        await wait_for_async(
            lambda: all(run.run_id in s._logs for s in (b, c)), timeout=2, what="both instances to follow the run"
        )
        # A "dies" for the others: it stops refreshing its liveness mark (a partition, a long pause).
        keep_alive = next(t for t in a._tasks if t.get_name().endswith("liveness"))
        keep_alive.cancel()
        started = asyncio.get_running_loop().time()
        endings = await asyncio.wait_for(asyncio.gather(*readers), 5)
        assert asyncio.get_running_loop().time() - started < 2.5
        for events in endings:
            assert texts(events) == "part"
            error, finish = events[-2].event, events[-1].event
            assert isinstance(error, ErrorEvent)
            assert (error.code, error.retryable) == ("interrupted", True)
            assert finish == FinishEvent("error")
        assert [e.seq for e in endings[0]] == [e.seq for e in endings[1]]
        # One instance ended it, and saved what had been said.
        await wait_for_async(lambda: len(outcomes) == 1, timeout=2, what="the partial answer to be saved")
        # Once both tail readers have let the run go, neither can still be checking its owner (a tail reader reads
        # the ending only after its own check, and the save, are done): no second save can come.
        await wait_for_async(
            lambda: not any(s._logs[run.run_id].followed for s in (b, c)), timeout=2, what="both tails to let go"
        )
        assert len(outcomes) == 1
        assert (outcomes[0].text, outcomes[0].reason, outcomes[0].conversation_id) == ("part", "error", "conv")
        # A was only presumed dead. When it can refresh its mark again it finds its run ended elsewhere and stops
        # it, without writing or saving anything.
        await a._liveness.refresh()
        await asyncio.wait_for(backend.cancelled.wait(), 2)
        await asyncio.wait_for(manager_a.wait(run.run_id), 2)
        with pytest.raises(RunClosedError):
            await a.append(run.run_id, [TextDelta("late")])
        assert len(outcomes) == 1
        events = await collect(manager_b, run.run_id)
        assert events[-1].event == FinishEvent("error")
        await a.close()


async def test_a_run_nobody_reads_is_ended_by_the_first_reader_to_come(redis_prefix: str) -> None:
    async with instance(redis_prefix, liveness_s=0.6) as b:
        from tokenrelay.stores.redis import RedisRunStore

        a = RedisRunStore(REDIS_URL, prefix=redis_prefix, liveness_s=0.6)
        await a.start()
        await a.create(info("orphan"))
        await a.append("orphan", [TextDelta("x")])
        await wait_for_async(lambda: a._logs["orphan"].events, timeout=2, what="the append to reach Redis")
        for task in a._tasks:
            task.cancel()
        await a._redis.delete(a._keys.instance(a.instance_id))  # as if its mark had expired
        events = await asyncio.wait_for(collect(RunManager(ScriptedBackend([]), b), "orphan"), 5)
        assert [e.event.type for e in events] == ["text-delta", "error", "finish"]
        await a._redis.aclose()


async def test_the_use_chat_index_is_shared_by_every_instance(redis_prefix: str) -> None:
    async with instance(redis_prefix) as a, instance(redis_prefix) as b:
        on_a, on_b = a.chat_run_index(), b.chat_run_index()
        assert await on_b.get("ann", "chat") is None
        await on_a.set("ann", "chat", "run-1")
        assert await on_b.get("ann", "chat") == "run-1"
        assert await on_b.get("ann:chat", "") is None  # ids cannot run into each other
        assert await on_b.get("bob", "chat") is None


async def test_one_blocked_read_follows_many_runs_and_takes_new_ones_at_once(redis_prefix: str) -> None:
    # b's blocked reads last 20 s (a third of its liveness period, under half its socket timeout), so a new run that
    # had to wait for the read to time out would be seen only after 20 s: the bound below cannot be met by waiting,
    # only by the wake-up stream cutting the read short, however loaded the machine is.
    # The first run, which b's read is blocked on, stays silent (on an instance of its own) until the end, so nothing
    # but the wake-up can end that read early.
    slow_polls = {"liveness_s": 60.0, "socket_timeout_s": 60.0}
    async with (
        instance(redis_prefix) as a,
        instance(redis_prefix) as quiet,
        instance(redis_prefix, **slow_polls) as b,
    ):
        # Long enough that every run is followed before it says anything: b must tail them all.
        manager_a = RunManager(ScriptedBackend([Pause(2.0), TextDelta("x"), FinishEvent()]), a)
        manager_quiet = RunManager(ScriptedBackend([Pause(60), TextDelta("late"), FinishEvent()]), quiet)
        manager_b = RunManager(ScriptedBackend([]), b)
        first = await manager_quiet.start(HELLO, user_id="u", conversation_id="c")
        blocked = first_xread(b)
        following = asyncio.create_task(collect(manager_b, first.run_id))
        await wait_for_async(lambda: b._tails.readers, timeout=2, what="a tail reader")
        await asyncio.wait_for(blocked.wait(), 2)  # its XREAD is sent now, and blocks for 20 s at most
        loop = asyncio.get_running_loop()
        runs = [await manager_a.start(HELLO, user_id="u", conversation_id="c") for _ in range(299)]
        started = loop.time()
        results = await asyncio.wait_for(asyncio.gather(*(collect(manager_b, r.run_id) for r in runs)), 10)
        assert loop.time() - started < 8.0  # well under one blocked read: the wake-up stream cut the wait short
        assert all(texts(events) == "x" for events in results)
        assert len(b._tails.readers) <= 2
        await manager_quiet.cancel(first.run_id)
        ended = await asyncio.wait_for(following, 10)
        assert texts(ended) == ""
        assert ended[-1].event == FinishEvent("cancelled")


async def test_appends_are_refused_with_the_store_errors(redis_prefix: str) -> None:
    async with instance(redis_prefix) as a, instance(redis_prefix) as b:
        await a.create(info("r1"))
        await a.append("r1", [TextDelta("a"), FinishEvent()])
        await a.finish("r1")
        with pytest.raises(RunFinishedError):
            await a.append("r1", [TextDelta("late")])
        with pytest.raises(ValueError, match="finished"):  # as before the errors had a root
            await a.append("r1", [TextDelta("late")])
        with pytest.raises(RunClosedError):
            await a.append("unknown", [TextDelta("x")])
        with pytest.raises(RunClosedError):
            await b.append("r1", [TextDelta("x")])  # only the owner appends
        assert issubclass(RunFinishedError, StoreError)
        assert issubclass(RunClosedError, StoreError)
        assert [e.event for e in await b.read("r1", 0, 1)] == [TextDelta("a"), FinishEvent()]


async def test_close_writes_what_is_pending_before_it_stops(redis_prefix: str) -> None:
    async with instance(redis_prefix) as b:
        from tokenrelay.stores.redis import RedisRunStore

        a = RedisRunStore(REDIS_URL, prefix=redis_prefix)
        await a.start()
        await a.create(info("r1"))
        await a.append("r1", [TextDelta(str(i)) for i in range(50)])
        await a.close()  # at once: the events are only queued for the flusher yet
        got = await b.read("r1", 0, 0)
        assert texts(got) == "".join(str(i) for i in range(50))
        assert [e.seq for e in got] == list(range(1, 51))


async def test_the_use_chat_index_takes_its_connection_and_prefix_and_expires(redis_prefix: str) -> None:
    from tokenrelay.stores.redis import RedisChatRunIndex

    async with raw_redis() as client:
        index = RedisChatRunIndex(client, prefix=redis_prefix, ttl_s=5)
        await index.set("ann", "chat", "run-1")
        assert await index.get("ann", "chat") == "run-1"
        ttl = await client.pttl(f"{redis_prefix}chat:3:ann:chat")
        assert 0 < ttl <= 5000
        async with instance(redis_prefix) as a:
            assert await a.chat_run_index().get("ann", "chat") == "run-1"  # the store's index is the same one
            assert a.chat_run_index() is a.chat_run_index()


async def test_close_right_after_start_ends_every_background_task(redis_prefix: str) -> None:
    from tokenrelay.stores.redis import RedisRunStore

    # One round trip after start, the inbox's first blocking read is still setting up its connection, where the
    # Redis client can lose a cancellation: close() must not wait for that task for ever.
    for _ in range(10):
        store = RedisRunStore(REDIS_URL, prefix=redis_prefix)
        await store.start()
        assert await store.get("nope") is None
        tasks = list(store._tasks)
        await asyncio.wait_for(store.close(), 5)
        assert all(task.done() for task in tasks)
