"""The redis section: events per second through the Redis run store against the in-process one, and what fan-out
costs Redis.

In one process, on a redis-server of the benchmark's own (a free port, nothing saved; its ``INFO commandstats`` count
only this benchmark's commands):

- throughput: a writer appends events one by one (yielding between appends, as a run's driver does) and a reader
  follows them — on a second store instance for Redis (so every event goes through Redis), on the same store for
  memory — until the finish; for one run, and for 1,000 runs at once (a writer and a reader each). Events/s from
  the first append to the last reader's finish.
- fan-out: one run watched by ``viewers`` readers spread over two store instances (the owner and another), events
  appended at a steady pace; the Redis commands per event (``INFO commandstats`` before and after) must not grow
  with the viewers: the owner's readers are served from memory and the other instance's by one shared ``XREAD``.

Medians of ``plan.repeats`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

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
# What the APPEND script runs inside Redis (INFO commandstats counts those too): not commands this process sends.
_IN_SCRIPTS = {"xadd", "hset", "hget", "pexpire"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _redis_server() -> Iterator[str]:
    """A redis-server of the benchmark's own; stopped by its pid afterwards."""
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(10)


def _info(run_id: str) -> RunInfo:
    return RunInfo(run_id, "bench", "c", "bench", time.time())


@contextlib.asynccontextmanager
async def _stores(kind: str, url: str) -> AsyncIterator[tuple[RunStore, RunStore]]:
    """(owner, reader): two Redis instances on one prefix, or the one memory store twice."""
    if kind == "memory":
        store = MemoryRunStore()
        yield store, store
        await store.close()
        return
    from tokenrelay.stores.redis import RedisRunStore

    prefix = f"bench:{secrets.token_hex(4)}:"
    owner, reader = RedisRunStore(url, prefix=prefix), RedisRunStore(url, prefix=prefix)
    await owner.start()
    await reader.start()
    try:
        yield owner, reader
    finally:
        await owner.close()
        await reader.close()


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


async def _throughput(kind: str, url: str, runs: int, events: int) -> float:
    """Events per second, every run's events written and read back on the reader instance."""
    async with _stores(kind, url) as (owner, reader):
        ids = [secrets.token_urlsafe(12) for _ in range(runs)]
        for run_id in ids:
            await owner.create(_info(run_id))
        await asyncio.gather(*(reader.read(run_id, 0, 0) for run_id in ids))  # loaded (and followed) first
        started = time.perf_counter()
        readers = [asyncio.create_task(_follow(reader, run_id, events + 1)) for run_id in ids]
        await asyncio.sleep(0)
        await asyncio.gather(*(_write(owner, run_id, events) for run_id in ids))
        await asyncio.wait_for(asyncio.gather(*readers), 120)
        return runs * events / (time.perf_counter() - started)


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
    async with _stores("redis", url) as (owner, other):
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
    with _redis_server() as url:
        for label, runs, events in (("1 run", 1, ONE_RUN_EVENTS), ("1,000 runs", MANY_RUNS, MANY_RUNS_EVENTS)):
            row = {}
            for kind in ("memory", "redis"):
                log(f"redis: {label}, {kind} store")
                row[kind] = _median([asyncio.run(_throughput(kind, url, runs, events)) for _ in range(repeats)])
            out["throughput"][label] = row
        for viewers in FANOUT_VIEWERS:
            log(f"redis: one run, {viewers:,} viewers over two instances")
            samples = [asyncio.run(_fanout(url, viewers)) for _ in range(repeats)]
            row = {key: _median([s[key] for s in samples]) for key in samples[0] if key != "calls"}
            out["fanout"].append(row | {"viewers": viewers, "calls": samples[0]["calls"]})
    return out


def table(results: dict[str, Any]) -> str:
    if "error" in results:
        return f"redis: not measured ({results['error']})"
    lines = [
        "Redis run store: events/s (written on one instance, read on another) against the in-process store",
        "",
        "| runs | memory events/s | redis events/s | redis / memory | target (≥ 0.5) |",
        "|---|---:|---:|---:|---|",
    ]
    for label, row in results["throughput"].items():
        ratio = row["redis"] / row["memory"]
        verdict = "met" if ratio >= 0.5 else "missed"
        lines.append(f"| {label} | {row['memory']:,.0f} | {row['redis']:,.0f} | {ratio:.2f} | {verdict} |")
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
