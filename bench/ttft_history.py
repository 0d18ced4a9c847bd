"""Idle time to first token with each history: a new conversation, a follow-up in an existing one, memory.

    python -m bench.ttft_history [--samples 30] [--postgresql]

One fresh ``tokenrelay serve --backend synthetic --synthetic-token '~'`` per history (the default SQLite history on
a fresh file, ``--history memory``, and with ``--postgresql`` a database of its own on the local PostgreSQL), pinned
to its core; the client here, pinned to the other. One request at a time, on a connection opened 10 ms before:
request sent → first ``~`` read. A follow-up is the second question of a conversation the client names, sent once
the first one's done frame has arrived (its answer is stored by then); a new conversation names none. Each sample
of one kind is followed by one of the other, so both see the same machine. Prints the medians and p90s (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from typing import Any

from bench.servers import CLIENT_CPU, HOST, PEERS, TOKEN, Server

DONE = b'"done"'


async def _request(port: int, query: str) -> float:
    """Request → first token (ms), then read on until the done frame (the answer is stored before it)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        await asyncio.sleep(0.01)
        writer.write(
            f"GET /api/chat/stream?{query} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        sent = time.perf_counter()
        first = 0.0
        seen = b""
        while DONE not in seen:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                raise RuntimeError(f"the stream ended before its done frame: {seen[-300:]!r}")
            if not first and TOKEN.encode() in chunk:
                first = time.perf_counter()
            seen = seen[-64:] + chunk
        return (first - sent) * 1000
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _measure(port: int, samples: int, kinds: tuple[str, ...]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i in range(-3, samples):  # three rounds to warm up, not counted
        for kind in kinds:
            if kind == "follow-up":
                await _request(port, f"message=first&conversation_id=f{i + 3}")
                ms = await _request(port, f"message=again&conversation_id=f{i + 3}")
            else:
                ms = await _request(port, "message=hi")
            if i >= 0:
                out[kind].append(ms)
            await asyncio.sleep(0.05)
    return out


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": statistics.median(ordered), "p90_ms": ordered[int(len(ordered) * 0.9)]}


def measure_server(extra: tuple[str, ...], samples: int, kinds: tuple[str, ...]) -> dict[str, Any]:
    with Server(PEERS["tokenrelay"], tokens=3, interval_ms=0, extra=extra) as server:
        raw = asyncio.run(_measure(server.port, samples, kinds))
    return {kind: _summary(values) for kind, values in raw.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--postgresql", action="store_true", help="also the history on the local PostgreSQL")
    args = parser.parse_args()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, CLIENT_CPU)
    results: dict[str, Any] = {}
    results["memory"] = measure_server(("--history", "memory"), args.samples, ("new", "follow-up"))
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = ("--history", "sql", "--database-url", f"sqlite:///{tmp}/ttft.db")
        results["sqlite"] = measure_server(sqlite, args.samples, ("new", "follow-up"))
    if args.postgresql:
        from bench.burst import _database

        with _database() as url:
            results["postgresql"] = measure_server(
                ("--history", "sql", "--database-url", url), args.samples, ("new", "follow-up")
            )
    print(json.dumps(results, indent=1))
    base = results["memory"]["follow-up"]["p50_ms"]
    for name, r in results.items():
        print(
            f"{name:10} new p50 {r['new']['p50_ms']:.2f} ms (p90 {r['new']['p90_ms']:.2f}), "
            f"follow-up p50 {r['follow-up']['p50_ms']:.2f} ms (p90 {r['follow-up']['p90_ms']:.2f}), "
            f"follow-up − new {r['follow-up']['p50_ms'] - r['new']['p50_ms']:+.2f} ms (same server), "
            f"follow-up − memory's {r['follow-up']['p50_ms'] - base:+.2f} ms"
        )


if __name__ == "__main__":
    main()
