"""The Redis run store on a real Redis Cluster of the module's own (tests/own_cluster.py: three masters, a replica
each): the single-node store's contract suite run again on the cluster, many runs across slots followed by one
instance, two server processes sharing the cluster, and a master failing over in the middle of a run."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.stores.redis_helpers as redis_helpers
import tests.stores.test_redis as single_node
from tests.conftest import collect, service_missing, texts, wait_for_async
from tests.faults.processes import serve_processes, text
from tests.own_cluster import RedisCluster
from tokenrelay.backends import Message, Pause, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.runs import RunManager
from tokenrelay.sse import ServerSentEvent, SSEDecoder

HELLO = [Message("user", "hello")]

# The single-node suite, on the cluster. Left out: one test that counts tail readers (two for 300 runs on one
# server; on a cluster a reader follows one slot's runs, see test_runs_across_slots_are_read_one_slot_per_command).
_REUSED = [
    name
    for name in dir(single_node)
    if name.startswith("test_") and name != "test_one_blocked_read_follows_many_runs_and_takes_new_ones_at_once"
]
globals().update({name: getattr(single_node, name) for name in _REUSED})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Started once for the module; every process it started is killed (by pid) after it."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        service_missing("redis-server and redis-cli", "not on PATH")
    nodes = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def redis_prefix(cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A prefix of its own on the cluster (which only this module uses, and which goes with it). The reused tests
    make their stores and raw clients through names patched here to the cluster's."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster as ClusterClient

    import tokenrelay.stores.redis as package
    from tokenrelay.stores.redis import RedisRunStore

    class OnCluster(RedisRunStore):
        def __init__(self, url: str = cluster.url, **options: Any) -> None:
            super().__init__(url, cluster=True, **options)

    plain = aioredis.Redis.from_url

    def from_url(url: str, **options: Any) -> Any:
        return ClusterClient.from_url(url, **options) if url == cluster.url else plain(url, **options)

    monkeypatch.setattr(package, "RedisRunStore", OnCluster)
    monkeypatch.setattr(aioredis.Redis, "from_url", staticmethod(from_url))
    monkeypatch.setattr(single_node, "REDIS_URL", cluster.url)
    monkeypatch.setattr(redis_helpers, "REDIS_URL", cluster.url)
    return f"tokenrelay-test:{secrets.token_hex(6)}:"


def on_cluster(cluster: RedisCluster, prefix: str, **options: Any) -> Any:
    from tokenrelay.stores.redis.store import RedisRunStore

    return RedisRunStore(cluster.url, prefix=prefix, cluster=True, **options)


async def test_a_prefix_with_a_brace_is_refused(cluster: RedisCluster) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        on_cluster(cluster, "app{1}:")


async def test_runs_across_slots_are_read_one_slot_per_command(cluster: RedisCluster, redis_prefix: str) -> None:
    a, b = on_cluster(cluster, redis_prefix), on_cluster(cluster, redis_prefix)
    await a.start()
    await b.start()
    slots_per_read: list[set[int]] = []
    xread = b._redis.xread

    async def spy(streams: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        slots_per_read.append({b._redis.keyslot(key) for key in streams})
        return await xread(streams, *args, **kwargs)

    b._redis.xread = spy
    try:
        # Every run is followed by b before it says anything, so b's tail readers carry all of it.
        manager_a = RunManager(ScriptedBackend([Pause(1.5), TextDelta("x"), FinishEvent()]), a)
        manager_b = RunManager(ScriptedBackend([]), b)
        runs = [await manager_a.start(HELLO, user_id="u", conversation_id="c") for _ in range(60)]
        following = [asyncio.create_task(collect(manager_b, r.run_id)) for r in runs]
        slots = {b._redis.keyslot(b._keys.events(r.run_id)) for r in runs}
        await wait_for_async(lambda: len(b._tails.readers) == len(slots), timeout=10, what="a reader per slot")
        results = await asyncio.wait_for(asyncio.gather(*following), 30)
    finally:
        await a.close()
        await b.close()
    assert all(texts(events) == "x" and events[-1].event == FinishEvent("stop") for events in results)
    assert slots_per_read
    assert all(len(read) == 1 for read in slots_per_read)  # never CROSSSLOT
    masters = {cluster.master_of(a._keys.events(r.run_id)) for r in runs}
    assert len(masters) == 3  # the runs were spread over every master


async def test_a_run_started_on_one_server_is_resumed_and_cancelled_from_the_other(
    cluster: RedisCluster, redis_prefix: str, tmp_path: Path
) -> None:
    flags = ("--backend", "synthetic", "--synthetic-tokens", "400", "--synthetic-interval-ms", "20")
    flags += ("--store", "redis", "--redis-cluster", "--redis-url", cluster.url, "--redis-prefix", redis_prefix)
    async with httpx.AsyncClient(timeout=20) as client:
        async with serve_processes(tmp_path, client, 2, *flags, "--on-disconnect", "detach") as [a, b]:
            body = {"message": "hi", "user_id": "ann"}
            async with client.stream("POST", f"{a.url}/api/chat/stream", json=body) as r:
                run_id = r.headers["x-run-id"]
                lines = r.aiter_lines()
                first = await anext(lines)
                while not first.startswith("id: "):  # past "retry:"
                    first = await anext(lines)
            seen = int(first.removeprefix("id: "))  # then the client goes (a drop: the run goes on, detached)
            resume = f"{b.url}/api/runs/{run_id}/stream"
            async with client.stream(
                "GET", resume, params={"user_id": "ann"}, headers={"last-event-id": str(seen)}
            ) as r:
                frames, decoder, cancel = [], SSEDecoder(), None
                async for chunk in r.aiter_raw():
                    frames += [
                        {**json.loads(f.data), "id": f.id}
                        for f in decoder.feed(chunk)
                        if isinstance(f, ServerSentEvent)
                    ]
                    if cancel is None and len(frames) >= 5:
                        cancel = await client.post(f"{b.url}/api/runs/{run_id}/cancel", params={"user_id": "ann"})
            assert cancel is not None
            assert cancel.json() == {"run_id": run_id, "cancelled": True}
            ids = [int(f["id"]) for f in frames if f["id"]]
            assert ids[0] > seen  # what follows the last event seen (coalesced: ids may skip)
            assert ids == sorted(set(ids))
            assert text(frames)
            assert frames[-1]["done"] is True
            assert frames[-1]["finish_reason"] == "cancelled"

            async def owner_idle() -> bool:
                return bool((await client.get(f"{a.url}/api/health")).json()["active_runs"] == 0)

            await redis_helpers.eventually(owner_idle, timeout=10, what="the owner to stop the run")


async def test_events_a_promoted_replica_lacks_are_written_again_by_the_owner(
    cluster: RedisCluster, redis_prefix: str
) -> None:
    # What a replica promoted before it had the last acknowledged events looks like: the stream and last_seq behind
    # the owner's acknowledged copy. The owner's next batch is refused (GAP) and it writes the lost events again.
    backend = ScriptedBackend([TextDelta("a"), TextDelta("b"), TextDelta("c"), Pause(60)])
    a = on_cluster(cluster, redis_prefix)
    await a.start()
    try:
        manager_a = RunManager(backend, a, on_disconnect="detach")
        run = await manager_a.start(HELLO, user_id="u", conversation_id="c")
        await wait_for_async(lambda: len(a._logs[run.run_id].events) == 3, timeout=10, what="three acknowledged")
        events_key = a._keys.events(run.run_id)
        [(_, first)] = await a._redis.xrange(events_key, count=1)
        await a._redis.delete(events_key)  # XDEL would keep the stream's last id
        await a._redis.xadd(events_key, first, id="0-1")
        await a._redis.hset(a._keys.meta(run.run_id), "last_seq", 1)
        await a.append(run.run_id, [TextDelta("d")])
        await wait_for_async(lambda: len(a._logs[run.run_id].events) == 4, timeout=10, what="the next batch")
        entries = await a._redis.xrange(a._keys.events(run.run_id))
        assert [entry[0] for entry in entries] == [b"0-1", b"0-2", b"0-3", b"0-4"]
        assert await a._redis.hget(a._keys.meta(run.run_id), "last_seq") == b"4"
        assert texts(await a.read(run.run_id, 0, 0)) == "abcd"
        await manager_a.cancel(run.run_id)
    finally:
        await a.close()


async def test_a_master_failing_over_mid_run_loses_no_acknowledged_event(
    cluster: RedisCluster, redis_prefix: str
) -> None:
    script: list[Any] = []
    for i in range(80):
        script += [TextDelta(f"{i} "), Pause(0.03)]
    backend = ScriptedBackend([*script, FinishEvent("stop")])
    whole = "".join(f"{i} " for i in range(80))
    a, b = on_cluster(cluster, redis_prefix), on_cluster(cluster, redis_prefix)
    await a.start()
    await b.start()
    master = 0
    try:
        manager_a = RunManager(backend, a, on_disconnect="detach")
        manager_b = RunManager(ScriptedBackend([]), b)
        run = await manager_a.start(HELLO, user_id="u", conversation_id="c")
        viewers = [asyncio.create_task(collect(m, run.run_id)) for m in (manager_a, manager_b, manager_b)]
        await wait_for_async(lambda: len(a._logs[run.run_id].events) >= 10, timeout=10, what="ten acknowledged")
        acknowledged = list(a._logs[run.run_id].events)  # what Redis (and its replica) had said yes to
        master = cluster.master_of(a._keys.meta(run.run_id))
        cluster.kill(master)
        endings = await asyncio.wait_for(asyncio.gather(*viewers), 60)
        for events in endings:
            assert texts(events) == whole
            assert [e.seq for e in events] == sorted({e.seq for e in events})  # coalesced: ids may skip
            assert events[-1].event == FinishEvent("stop")
        assert cluster.master_of(a._keys.meta(run.run_id)) != master  # its replica took over
        from tokenrelay.stores.redis.store import RedisRunStore

        # A new instance, given a node still up (its URL is its only way in: the killed master may be the URL's).
        c = RedisRunStore(f"redis://127.0.0.1:{cluster.alive()[0]}/0", prefix=redis_prefix, cluster=True)
        await c.start()
        try:
            stored = await c.read(run.run_id, 0, 0)
        finally:
            await c.close()
        assert [e.event for e in stored[: len(acknowledged)]] == acknowledged
        assert [e.event for e in stored] == [e for e in script if not isinstance(e, Pause)] + [FinishEvent("stop")]
        assert [e.seq for e in stored] == list(range(1, 82))
        assert all(events[-1].seq == 81 for events in endings)
    finally:
        await a.close()
        await b.close()
        if master and master not in cluster.alive():
            cluster.restart(master)
            cluster.wait_healthy(60)
