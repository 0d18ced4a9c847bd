"""The redis section: events per second through the Redis run store against the in-process one, and what fan-out
costs Redis.

On a redis-server of the benchmark's own (a free port, nothing saved; its ``INFO commandstats`` count only this
benchmark's commands):

- throughput, per instance: a writer appends events one by one (yielding between appends, as a run's driver does)
  and a reader follows them until the finish; for one run, and for 1,000 runs at once (a writer and a reader each).
  For Redis the writer's store instance and the reader's are two processes (``multiprocessing``, spawned), each with
  its own event loop, as in production: the owner appends, another instance's viewers read, and every event goes
  through Redis. The in-process store has its writer and its reader in one process, as it must. Each process is
  pinned to a core (``CORES``): the in-process one and the Redis writer on core 0, the Redis reader on core 1;
  redis-server is left to the scheduler. Events/s from the writer's first append to the reader's last finish
  (``time.perf_counter`` is the system's monotonic clock, the same in every process), and each process's CPU
  seconds over that span (``time.process_time``): events per CPU second is what one instance sustains whatever the
  rest of the machine does.
- fan-out: one run watched by ``viewers`` readers spread over two store instances (the owner and another) in this
  process, events appended at a steady pace; the Redis commands per event (``INFO commandstats`` before and after)
  must not grow with the viewers: the owner's readers are served from memory and the other instance's by one shared
  ``XREAD``.

Medians of ``plan.repeats`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

from bench.servers import redis_server
from bench.suite import Plan, log
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.stores import MemoryRunStore, RunInfo
from tokenrelay.stores.base import RunStore

__all__ = ["measure", "table"]

ONE_RUN_EVENTS = 20_000
MANY_RUNS = 1_000
MANY_RUNS_EVENTS = 50
FANOUT_VIEWERS = (1_000, 10_000)
FANOUT_EVENTS = 100
FANOUT_GAP_S = 0.01
# The core each throughput process runs on (none on a one-core machine).
CORES = {"memory": 0, "writer": 0, "reader": 1}
STEP_TIMEOUT_S = 180.0  # the longest a process may take over one step (starting, loading, the measured part)
# What the APPEND script runs inside Redis (INFO commandstats counts those too): not commands this process sends.
_IN_SCRIPTS = {"xadd", "hset", "hget", "pexpire"}


def _info(run_id: str) -> RunInfo:
    return RunInfo(run_id, "bench", "c", "bench", time.time())


async def _write(store: RunStore, run_id: str, events: int) -> None:
    for i in range(events):
        await store.append(run_id, [TextDelta(str(i % 10))])
        await asyncio.sleep(0)  # a driver yields between tokens
    await store.append(run_id, [FinishEvent("stop")])
    await store.finish(run_id)


async def _follow(store: RunStore, run_id: str, total: int, *, coalesced: bool = False) -> None:
    after = 0
    while after < total:
        got = await (store.read_coalesced if coalesced else store.read)(run_id, after, 10.0)
        if got:
            after = got[-1].seq


# throughput: each instance in a process of its own


def _process(role: str, conn: Connection, url: str, prefix: str, ids: list[str], events: int) -> None:
    """A throughput process's body: ``role`` is memory (writer and reader in one), writer or reader."""
    if (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {CORES[role]})
    body = {"memory": _memory_instance, "writer": _writer_instance, "reader": _reader_instance}[role]
    try:
        conn.send(asyncio.run(body(conn, url, prefix, ids, events)))
    except Exception as exc:
        conn.send({"error": f"{role}: {exc!r}"})
        raise


async def _step(conn: Connection, expected: str) -> None:
    """Wait (off the event loop, which keeps the store's own tasks running) for the parent's next step."""
    got = await asyncio.to_thread(conn.recv)
    if got != expected:
        raise RuntimeError(f"expected {expected!r} from the benchmark, got {got!r}")


async def _memory_instance(conn: Connection, url: str, prefix: str, ids: list[str], events: int) -> dict[str, Any]:
    store = MemoryRunStore()
    for run_id in ids:
        await store.create(_info(run_id))
    conn.send("ready")
    await _step(conn, "go")
    cpu, started = time.process_time(), time.perf_counter()
    readers = [asyncio.create_task(_follow(store, run_id, events + 1)) for run_id in ids]
    await asyncio.sleep(0)
    await asyncio.gather(*(_write(store, run_id, events) for run_id in ids))
    await asyncio.wait_for(asyncio.gather(*readers), STEP_TIMEOUT_S)
    done = time.perf_counter()
    await store.close()
    return {"started": started, "done": done, "cpu": time.process_time() - cpu}


async def _writer_instance(conn: Connection, url: str, prefix: str, ids: list[str], events: int) -> dict[str, Any]:
    from tokenrelay.stores.redis import RedisRunStore

    store = RedisRunStore(url, prefix=prefix)
    await store.start()
    try:
        for run_id in ids:
            await store.create(_info(run_id))
        conn.send("created")
        await _step(conn, "go")
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(_write(store, run_id, events) for run_id in ids))  # each finish() waits for Redis
        return {"started": started, "written": time.perf_counter(), "cpu": time.process_time() - cpu}
    finally:
        await store.close()


async def _reader_instance(conn: Connection, url: str, prefix: str, ids: list[str], events: int) -> dict[str, Any]:
    from tokenrelay.stores.redis import RedisRunStore

    store = RedisRunStore(url, prefix=prefix)
    await store.start()
    try:
        await _step(conn, "load")
        await asyncio.gather(*(store.read(run_id, 0, 0) for run_id in ids))  # loaded (and followed) first
        readers = [asyncio.create_task(_follow(store, run_id, events + 1)) for run_id in ids]
        await asyncio.sleep(0)
        cpu = time.process_time()
        conn.send("ready")
        await asyncio.wait_for(asyncio.gather(*readers), STEP_TIMEOUT_S)
        return {"done": time.perf_counter(), "cpu": time.process_time() - cpu}
    finally:
        await store.close()


def _expect(conn: Connection, what: str) -> Any:
    """The next message from a throughput process (``what``, or its result); an error if it failed or hangs."""
    if not conn.poll(STEP_TIMEOUT_S):
        raise RuntimeError(f"redis bench: no {what} within {STEP_TIMEOUT_S:.0f}s")
    got = conn.recv()
    if isinstance(got, dict) and "error" in got:
        raise RuntimeError(f"redis bench: {got['error']}")
    if what != "result" and got != what:
        raise RuntimeError(f"redis bench: expected {what!r}, got {got!r}")
    return got


def _throughput(kind: str, url: str, runs: int, events: int) -> dict[str, float]:
    """Every run's events written and read back: events/s, and events per CPU second of each process."""
    ctx = multiprocessing.get_context("spawn")
    ids = [secrets.token_urlsafe(12) for _ in range(runs)]
    prefix = f"bench:{secrets.token_hex(4)}:"
    roles = ("memory",) if kind == "memory" else ("writer", "reader")
    pipes = {role: ctx.Pipe() for role in roles}
    processes = {
        role: ctx.Process(target=_process, args=(role, pipes[role][1], url, prefix, ids, events), daemon=True)
        for role in roles
    }
    for process in processes.values():
        process.start()
    conns = {role: pipes[role][0] for role in roles}
    try:
        if kind == "memory":
            _expect(conns["memory"], "ready")
            conns["memory"].send("go")
            result = _expect(conns["memory"], "result")
            total = runs * events
            return {"events_s": total / (result["done"] - result["started"]), "cpu_events_s": total / result["cpu"]}
        _expect(conns["writer"], "created")
        conns["reader"].send("load")
        _expect(conns["reader"], "ready")
        conns["writer"].send("go")
        written, read = _expect(conns["writer"], "result"), _expect(conns["reader"], "result")
    finally:
        for process in processes.values():
            process.join(30)
            if process.is_alive():
                process.kill()
    total = runs * events
    return {
        "events_s": total / (read["done"] - written["started"]),
        "writer_events_s": total / (written["written"] - written["started"]),
        "writer_cpu_events_s": total / written["cpu"],
        "reader_cpu_events_s": total / read["cpu"],
    }


# fan-out: one run, many viewers over two instances in this process


@contextlib.asynccontextmanager
async def _instances(url: str) -> AsyncIterator[tuple[RunStore, RunStore]]:
    """Two Redis store instances on one prefix: a run's owner and another."""
    from tokenrelay.stores.redis import RedisRunStore

    prefix = f"bench:{secrets.token_hex(4)}:"
    owner, other = RedisRunStore(url, prefix=prefix), RedisRunStore(url, prefix=prefix)
    await owner.start()
    await other.start()
    try:
        yield owner, other
    finally:
        await owner.close()
        await other.close()


async def _commands(url: str) -> dict[str, int]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def _fanout(url: str, viewers: int) -> dict[str, Any]:
    """One run, ``viewers`` readers half on its owner and half on another instance: Redis commands per event."""
    async with _instances(url) as (owner, other):
        run_id = secrets.token_urlsafe(12)
        await owner.create(_info(run_id))
        total = FANOUT_EVENTS + 1
        tasks = [
            asyncio.create_task(_follow(owner if n % 2 else other, run_id, total, coalesced=True))
            for n in range(viewers)
        ]
        for _ in range(100):  # every viewer is waiting (the other instance loaded the run and follows it)
            await asyncio.sleep(0.01)
        before = await _commands(url)
        for i in range(FANOUT_EVENTS):
            await owner.append(run_id, [TextDelta(str(i % 10))])
            await asyncio.sleep(FANOUT_GAP_S)
        await owner.append(run_id, [FinishEvent("stop")])
        await owner.finish(run_id)
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
        after = await _commands(url)
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    calls.pop("info", None)
    calls = {name: n for name, n in calls.items() if n}
    sent = sum(n for name, n in calls.items() if name not in _IN_SCRIPTS)
    return {
        "viewers": viewers,
        "per_event": sum(calls.values()) / total,
        "sent_per_event": sent / total,
        "xread_per_event": calls.get("xread", 0) / total,
        "evalsha_per_event": calls.get("evalsha", 0) / total,
        "calls": calls,
    }


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def measure(plan: Plan) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        return {"error": "redis-server is not on PATH"}
    repeats = max(1, plan.repeats)
    out: dict[str, Any] = {"throughput": {}, "fanout": []}
    with redis_server() as url:
        for label, runs, events in (("1 run", 1, ONE_RUN_EVENTS), ("1,000 runs", MANY_RUNS, MANY_RUNS_EVENTS)):
            row: dict[str, dict[str, float]] = {}
            for kind in ("memory", "redis"):
                log(f"redis: {label}, {kind} store")
                samples = [_throughput(kind, url, runs, events) for _ in range(repeats)]
                row[kind] = {key: _median([s[key] for s in samples]) for key in samples[0]}
                log(f"  {', '.join(f'{k} {v:,.0f}' for k, v in row[kind].items())}")
            out["throughput"][label] = row
        for viewers in FANOUT_VIEWERS:
            log(f"redis: one run, {viewers:,} viewers over two instances")
            fanout = [asyncio.run(_fanout(url, viewers)) for _ in range(repeats)]
            medians = {key: _median([s[key] for s in fanout]) for key in fanout[0] if key != "calls"}
            out["fanout"].append(medians | {"viewers": viewers, "calls": fanout[0]["calls"]})
    return out


def table(results: dict[str, Any]) -> str:
    if "error" in results:
        return f"redis: not measured ({results['error']})"
    lines = [
        "Redis run store: events/s, written on one instance and read on another (two processes), against the",
        "in-process store (its writer and reader in one process); and events per CPU second of each process",
        "",
        "| runs | memory events/s | redis events/s | redis / memory | target (≥ 0.5) "
        "| memory events/CPU-s | redis writer events/CPU-s | redis reader events/CPU-s |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for label, row in results["throughput"].items():
        memory, redis = row["memory"], row["redis"]
        ratio = redis["events_s"] / memory["events_s"]
        verdict = "met" if ratio >= 0.5 else "missed"
        lines.append(
            f"| {label} | {memory['events_s']:,.0f} | {redis['events_s']:,.0f} | {ratio:.2f} | {verdict} "
            f"| {memory['cpu_events_s']:,.0f} | {redis['writer_cpu_events_s']:,.0f} "
            f"| {redis['reader_cpu_events_s']:,.0f} |"
        )
    lines += [
        "",
        "One run watched over two instances: Redis commands per event (sent by the instances; executed, with what",
        "the scripts run; of them XREAD and EVALSHA)",
        "",
        "| viewers | sent / event | executed / event | XREAD / event | EVALSHA / event |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in results["fanout"]:
        lines.append(
            f"| {row['viewers']:,} | {row['sent_per_event']:.2f} | {row['per_event']:.2f} | "
            f"{row['xread_per_event']:.2f} | {row['evalsha_per_event']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.redis_throughput: this section alone
    from bench.suite import QUICK

    print(table(measure(QUICK)))
