"""``python -m bench --sections workers``: tokens delivered by ``tokenrelay serve --workers N``, N = 1 and 2.

The same concurrent-streams measurement as the synthetic and real-upstream sections (C streams at 50 tokens/s, a
window of steady state), through tokenrelay with ``--workers N`` for each N of the plan — every N with the same
shared store and history (``--store redis`` on a redis-server of the benchmark's own, a SQLite history file), so
that the ratio is the workers' alone. The servers are not pinned: N workers may use every core. On a 2-core machine
they share those cores with the load client (pinned to core 1), Redis and, for the real upstream, the fake upstream:
the ratio says what a second process gains on such a machine, not what it would on cores of its own.

Server CPU is the whole process tree's (the parent and its workers; 100% = one core busy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers import CLIENT_CPU, HOST, PEERS, CpuSampler, Peer, Server, redis_server, run_client
from bench.suite import INTERVAL_MS, RATE, Plan, log


def wait_for_workers(port: int, workers: int, timeout: float = 60) -> None:
    """Until ``workers`` different instances answer /api/health (each on a connection of its own)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers answered in {timeout:g} s")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        with contextlib.suppress(OSError, ValueError, KeyError):
            conn.request("GET", "/api/health")
            seen.add(json.loads(conn.getresponse().read())["instance"])
        conn.close()


def _one(peer: Peer, workers: int, streams: int, plan: Plan, redis_url: str, tmp: str) -> dict[str, Any]:
    """``streams`` streams through ``tokenrelay serve --workers {workers}``, unpinned."""
    db = Path(tmp) / f"history-{secrets.token_hex(4)}.db"
    extra = (
        *("--workers", str(workers), "--store", "redis", "--redis-url", redis_url),
        *("--redis-prefix", f"bench-{secrets.token_hex(4)}:", "--history", "sql"),
        *("--database-url", f"sqlite+aiosqlite:///{db}"),
    )
    delay_ms = plan.start_delay_ms(streams)
    tokens = plan.stream_tokens(delay_ms)
    with Server(peer, tokens=tokens, interval_ms=INTERVAL_MS, delay_ms=delay_ms, extra=extra, cpus=None) as server:
        wait_for_workers(server.port, workers)
        cfg = {"mode": "warm", "host": HOST, "port": server.port, "path": server.path}
        run_client(cfg | {"count": 3})
        with CpuSampler(server.proc.pid, children=True).running() as cpu:
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
        result["server_cpu"] = cpu.share(*result["window_wall"])
        result["tokens_per_s"] = (result["share"] or 0) * RATE * streams
        return result


def _series(
    name: str, peer: Peer, counts: tuple[int, ...], plan: Plan, redis_url: str, tmp: str
) -> dict[int, dict[int, Any]]:
    out: dict[int, dict[int, Any]] = {}
    for streams in counts:
        out[streams] = {}
        for workers in plan.workers:
            log(f"workers, {name}: {workers} worker(s), {streams} streams x {RATE} tokens/s for {plan.window_s:g} s")
            try:
                r = _one(peer, workers, streams, plan, redis_url, tmp)
            except Exception as exc:  # one failure does not void the other figures
                out[streams][workers] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[-300:]}"}
                log(f"  failed: {out[streams][workers]['error']}")
                continue
            out[streams][workers] = r
            log(f"  delivered {r['share']:.1%}, p99 gap {r['gap_p99_ms']} ms, server CPU {r['server_cpu'] or 0:.0%}")
    return out


def measure(plan: Plan) -> dict[str, Any]:
    """Both series, synthetic and through the fake upstream, at every worker count of the plan."""
    if shutil.which("redis-server") is None:
        return {"error": "no redis-server on PATH (make services)"}
    from bench.real_upstream import RELAYS
    from bench.upstream import fake_upstream_process

    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "layout": f"tokenrelay unpinned ({cores} cores); load client on core {min(CLIENT_CPU)}; redis-server "
        f"unpinned; fake upstream on core {min(CLIENT_CPU)}; load average {os.getloadavg()[0]:.1f} at start",
    }
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        out["synthetic"] = _series("synthetic", PEERS["tokenrelay"], plan.workers_streams, plan, redis_url, tmp)
        with fake_upstream_process() as (url, _):
            relay = dataclasses.replace(RELAYS["tokenrelay"], base_url=url)
            out["real-upstream"] = _series("real upstream", relay, plan.workers_upstream_streams, plan, redis_url, tmp)
    return out


def table(results: dict[str, Any], rate: int = RATE, window_s: float = 0) -> str:
    """The workers table (Markdown): delivered tokens at each worker count, and the ratio to 1 worker."""
    if "error" in results:
        return f"**Workers**: skipped — {results['error']}"
    rows = [
        f"**tokenrelay serve --workers N** ({rate} tokens/s per stream, {window_s:g} s window; --store redis, SQLite "
        "history, the same for every N; ratios are delivered tokens against 1 worker)",
        "",
        f"Layout: {results['layout']}",
        "",
        "| backend | streams | workers | delivered | tokens/s | vs 1 worker | gap p50 | gap p99 | server CPU "
        "| client CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for backend in ("synthetic", "real-upstream"):
        for streams, by_workers in results.get(backend, {}).items():
            one = by_workers.get(1) or by_workers.get("1") or {}
            for workers, r in by_workers.items():
                rows.append(f"| {backend} | {int(streams):,} | {workers} | {_cell(r, one)}")
    return "\n".join(rows)


def _cell(r: dict[str, Any], one: dict[str, Any]) -> str:
    from bench.report import _f, _pct

    if "error" in r:
        return f"failed: {r['error']} | | | | | | |"
    base = one.get("tokens_per_s") if "error" not in one else None
    ratio = f"{r['tokens_per_s'] / base:.2f}×" if base else ""
    flag = "" if r["connected"] == r["streams"] and not r["failed"] else f" ({r['connected']} connected)"
    return (
        f"{_f(r['share'] * 100, 1)}%{flag} | {r['tokens_per_s']:,.0f} | {ratio} | {_f(r['gap_p50_ms'], 1, ' ms')} "
        f"| {_f(r['gap_p99_ms'], 1, ' ms')} | {_pct(r.get('server_cpu'))} | {_pct(r['client_cpu'])} |"
    )
