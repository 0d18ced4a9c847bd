"""The benchmark's steps: every server under test, one fresh process per measurement."""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import BLAST, HOST, PEERS, Peer, Server, run_client

RATE = 50  # tokens per second per stream
INTERVAL_MS = 1000 / RATE


@dataclass(frozen=True)
class Plan:
    peers: tuple[str, ...]
    streams: tuple[int, ...]
    window_s: float
    single_s: float
    repeats: int
    ttft_count: int
    local: bool
    local_tokens: int
    upstream_chunks: int = 100_000
    upstream_streams: tuple[int, ...] = (200, 500, 1000)
    upstream_relays: tuple[str, ...] = ("tokenrelay", "tokenrelay-sqlite", "seed-sdk", "httpx", "litellm")
    sections: tuple[str, ...] = ("synthetic", "real-upstream", "burst", "workers", "redis", "local")
    burst_count: int = 2000
    burst_rounds: int = 5
    # `tokenrelay serve --workers N` (bench/workers.py): the worker counts and the stream counts of each series
    workers: tuple[int, ...] = (1, 2)
    workers_streams: tuple[int, ...] = (1000, 2000)
    workers_upstream_streams: tuple[int, ...] = (200, 500)
    ramp_timeout_s: float = 30
    first_token_timeout_s: float = 10

    def stream_tokens(self, delay_ms: float) -> int:
        """Long enough to outlast the wait for first tokens and the window; the client closes the streams after."""
        return int(RATE * (delay_ms / 1000 + self.first_token_timeout_s + 1 + self.window_s + 5))

    @staticmethod
    def start_delay_ms(streams: int) -> float:
        """Silence before each stream's first token, so that every connection is accepted before the load starts.

        A saturated uvicorn accepts new connections slowly (about one per turn of its event loop), so streams that
        start while the others already flow would join seconds late; the same delay is asked of every server.
        """
        return 1000 + streams * 0.5


QUICK = Plan(
    ("bare", "tokenrelay", "seed", "sse-starlette", "fastapi-sse"),
    (500, 2000),
    5,
    1,
    2,
    15,
    True,
    48,
    20_000,
    (50, 200),
)
FULL = Plan(
    ("bare", "tokenrelay", "seed", "sse-starlette", "fastapi-sse"), (1000, 2000, 5000, 10000), 10, 2, 3, 30, True, 200
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def log_load(r: dict[str, Any]) -> None:
    log(f"  delivered {r['share']:.1%}, p99 gap {r['gap_p99_ms']} ms, {r['rss_kb_per_stream']:.1f} KB/stream")


def single(peer: Peer, plan: Plan) -> dict[str, Any]:
    with Server(peer, tokens=10**8, interval_ms=0) as server:
        cfg = {"mode": "single", "host": HOST, "port": server.port, "path": server.path}
        return run_client(cfg | {"duration_s": plan.single_s, "repeats": plan.repeats})


def ttft(peer: Peer, plan: Plan, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    with Server(peer, tokens=5, interval_ms=INTERVAL_MS, extra=extra) as server:
        cfg = {"mode": "ttft", "host": HOST, "port": server.port, "path": server.path}
        run_client(cfg | {"count": 3})  # warm-up: imports, first-request caches
        return run_client(cfg | {"count": plan.ttft_count})


def load(
    peer: Peer, streams: int, plan: Plan, *, extra: tuple[str, ...] = (), request: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``streams`` streams at ``RATE`` through a fresh server.

    ``extra`` goes to the server's command, ``request`` to the client's config (a POST body, for a proxy).
    """
    delay_ms = plan.start_delay_ms(streams)
    tokens = plan.stream_tokens(delay_ms)
    with Server(peer, tokens=tokens, interval_ms=INTERVAL_MS, delay_ms=delay_ms, extra=extra) as server:
        cfg = {"mode": "warm", "host": HOST, "port": server.port, "path": server.path} | (request or {})
        run_client(cfg | {"count": 3})
        baseline = server.rss_kb()
        with server.sampled() as peak:
            result = run_client(
                cfg
                | {
                    "mode": "load",
                    "streams": streams,
                    "rate": RATE,
                    "window_s": plan.window_s,
                    "ramp_timeout_s": plan.ramp_timeout_s,
                    "first_token_timeout_s": plan.first_token_timeout_s,
                },
                timeout=delay_ms / 1000 + plan.ramp_timeout_s + plan.first_token_timeout_s + plan.window_s + 60,
            )
        result["rss_kb_per_stream"] = (peak() - baseline) / streams
        result["server_cpu"] = server.cpu_share(*result["window_wall"])
        result["rss_baseline_mb"] = baseline / 1024
        return result


def check_ports(streams: int) -> None:
    """Each stream takes an ephemeral port of the one client address (closed with RST, so none linger)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return
    if high - low + 1 < streams + 1000:
        log(f"warning: ip_local_port_range {low}-{high} is short for {streams:,} streams")


def run(plan: Plan) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {_cores()} cores",
            "window_s": plan.window_s,
            "rate": RATE,
        },
        "peers": {},
    }
    if "synthetic" in plan.sections:
        _synthetic(plan, results)
    if "real-upstream" in plan.sections:
        log("real upstream: one stream through a fake OpenAI-compatible server")
        from bench.real_upstream import concurrent
        from bench.upstream import single as upstream_single

        results["upstream"] = upstream_single(plan.upstream_chunks, plan.repeats)
        check_ports(max(plan.upstream_streams, default=0))
        results["real_upstream"] = concurrent(plan, plan.upstream_relays)
    if "burst" in plan.sections:
        from bench.burst import measure as burst

        results["burst"] = burst(plan)
    if "workers" in plan.sections:
        from bench.workers import measure as workers

        check_ports(max((*plan.workers_streams, *plan.workers_upstream_streams), default=0))
        results["workers"] = workers(plan)
    if "redis" in plan.sections:
        from bench.redis_throughput import measure as redis_throughput

        results["redis"] = redis_throughput(plan)
    if plan.local and "local" in plan.sections:
        log("local model: llama.cpp in-process, then through tokenrelay")
        from bench.local_model import measure

        try:
            results["local"] = measure(plan.local_tokens, plan.repeats)
        except Exception as exc:  # no model installed: the rest of the benchmark still stands
            results["local"] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def _synthetic(plan: Plan, results: dict[str, Any]) -> None:
    """The synthetic backend against the bare loop and the SSE stacks: single stream, TTFT, concurrent streams."""
    check_ports(max(plan.streams, default=0))
    log("client ceiling")
    results["ceiling"] = single(BLAST, plan)
    for name in plan.peers:
        peer = PEERS[name]
        entry: dict[str, Any] = {"label": peer.label, "load": {}}
        results["peers"][name] = entry
        log(f"{name}: single stream")
        entry["single"] = single(peer, plan)
        log(f"{name}: time to first token")
        entry["ttft"] = ttft(peer, plan)
        for count in plan.streams:
            log(f"{name}: {count} streams x {RATE} tokens/s for {plan.window_s:g} s")
            entry["load"][count] = load(peer, count, plan)
            log_load(entry["load"][count])
    if "tokenrelay" in plan.peers:
        log("tokenrelay: time to first token with the default SQL history")
        with tempfile.TemporaryDirectory() as tmp:
            sql = ("--history", "sql", "--database-url", f"sqlite+aiosqlite:///{tmp}/bench.db")
            results["ttft_sql"] = ttft(PEERS["tokenrelay"], plan, sql)


def _cores() -> int:
    import os

    return os.cpu_count() or 1
