"""The burst section: ``count`` simultaneous chat requests against one tokenrelay process, per history.

Each request starts a new conversation, so the history writes its question before the run begins (what every
``POST /api/chat/stream`` does). Memory, the default SQLite file and PostgreSQL (when it answers) are measured in
the same run; the table gives first-token p50/p90 and runs started per second, and the SQL histories against the
memory history.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import tempfile
from collections.abc import Iterator
from typing import Any

from bench.servers import HOST, PEERS, Server, run_client
from bench.suite import Plan, log

PG = "postgresql://postgres@127.0.0.1:5432"


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG}/test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL, dropped afterwards (the shared ``test`` one is left alone)."""
    name = f"tokenrelay_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _run(extra: tuple[str, ...], count: int) -> dict[str, Any]:
    # Connections are opened before the burst: keep them open past the default 5 s keep-alive while the rest connect.
    extra = (*extra, "--keep-alive-s", "120")
    with Server(PEERS["tokenrelay"], tokens=20, interval_ms=20, extra=extra) as server:
        cfg = {"host": HOST, "port": server.port, "path": server.path}
        run_client(cfg | {"mode": "warm", "count": 3})
        return run_client(cfg | {"mode": "burst", "count": count}, timeout=180)


def _one(name: str, count: int) -> dict[str, Any]:
    if name == "memory":
        return _run(("--history", "memory"), count)
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/burst.db"
            return _run(("--history", "sql", "--database-url", url), count)
    with _database() as url:
        return _run(("--history", "sql", "--database-url", url), count)


def measure(plan: Plan) -> dict[str, Any]:
    """``plan.burst_rounds`` rounds of one burst per history, the order reversed every other round (the machine's
    speed drifts over minutes: a history measured always first or always last would carry the drift)."""
    names = ["memory", "sqlite", "postgresql"]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    count = plan.burst_count
    for index in range(plan.burst_rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            log(f"burst {index + 1}/{plan.burst_rounds}: {count} simultaneous starts, {name} history")
            try:
                result = _one(name, count)
            except Exception as exc:  # PostgreSQL down or asyncpg missing: the other histories still stand
                result = {"error": f"{type(exc).__name__}: {exc}"}
            rounds[name].append(result)
            log(f"  {result}")
    return {name: summary(runs) for name, runs in rounds.items()}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One history's rounds: the medians of its figures, and the rounds themselves (the ratios are per round)."""
    ok = [r for r in runs if "error" not in r and r.get("starts_per_s")]
    if not ok:
        return {"error": next((r["error"] for r in runs if "error" in r), "no stream started"), "rounds": runs}
    return {
        "count": ok[0]["count"],
        "started": min(r["started"] for r in ok),
        "ttft_p50_ms": statistics.median(r["ttft_p50_ms"] for r in ok),
        "ttft_p90_ms": statistics.median(r["ttft_p90_ms"] for r in ok),
        "starts_per_s": statistics.median(r["starts_per_s"] for r in ok),
        "rounds": runs,
    }


def ratios(result: dict[str, Any], base: dict[str, Any]) -> list[tuple[float, float]]:
    """Each round's (starts/s, first-token p90) against the memory history's in the same round."""
    pairs = []
    for mine, theirs in zip(result.get("rounds", ()), base.get("rounds", ()), strict=False):
        if all(r.get("starts_per_s") and r.get("ttft_p90_ms") for r in (mine, theirs)):
            pairs.append((mine["starts_per_s"] / theirs["starts_per_s"], mine["ttft_p90_ms"] / theirs["ttft_p90_ms"]))
    return pairs


def table(results: dict[str, Any]) -> str:
    """Medians over the rounds; the ratio column is the median of each round's ratio to that round's memory run,
    with the rounds' range, and the verdict on the targets (every stream started in every round, >= 80% of memory's
    starts/s, p90 <= 1.5x)."""
    base = results.get("memory", {})
    rounds = len(base.get("rounds", ())) or 1
    lines = [
        f"| history | started | first token p50 | p90 | runs started/s | vs memory, median of {rounds} rounds "
        "(starts/s, p90) [range] | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | |")
            continue
        ratio = verdict = ""
        pairs = ratios(r, base) if name != "memory" else []
        if pairs:
            starts = statistics.median(p[0] for p in pairs)
            p90 = statistics.median(p[1] for p in pairs)
            ratio = (
                f"{starts:.0%}, {p90:.2f}× [{min(p[0] for p in pairs):.0%}–{max(p[0] for p in pairs):.0%}, "
                f"{min(p[1] for p in pairs):.2f}–{max(p[1] for p in pairs):.2f}×]"
            )
            every = all(x["started"] == x["count"] for x in (r, base))  # starts/s over fewer streams: no comparison
            verdict = "met" if every and starts >= 0.8 and p90 <= 1.5 else "**missed**"
        lines.append(
            f"| {name} | {r['started']}/{r['count']} | {_ms(r['ttft_p50_ms'])} | {_ms(r['ttft_p90_ms'])} "
            f"| {r['starts_per_s']:,.0f} | {ratio} | {verdict} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"
