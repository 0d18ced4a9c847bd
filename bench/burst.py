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


def measure(plan: Plan) -> dict[str, Any]:
    results: dict[str, Any] = {}
    count = plan.burst_count
    for name in ("memory", "sqlite", "postgresql"):
        log(f"burst: {count} simultaneous starts, {name} history")
        try:
            if name == "memory":
                results[name] = _run(("--history", "memory"), count)
            elif name == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite+aiosqlite:///{tmp}/burst.db"
                    results[name] = _run(("--history", "sql", "--database-url", url), count)
            else:
                with _database() as url:
                    results[name] = _run(("--history", "sql", "--database-url", url), count)
        except Exception as exc:  # PostgreSQL down or asyncpg missing: the other histories still stand
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  {results[name]}")
    return results


def table(results: dict[str, Any]) -> str:
    base = results.get("memory", {})
    lines = [
        "| history | started | first token p50 | p90 | runs started/s | vs memory (starts/s, p90) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | |")
            continue
        ratio = ""
        if name != "memory" and base.get("starts_per_s") and r.get("starts_per_s"):
            ratio = f"{r['starts_per_s'] / base['starts_per_s']:.0%}, {r['ttft_p90_ms'] / base['ttft_p90_ms']:.2f}×"
        lines.append(
            f"| {name} | {r['started']}/{r['count']} | {_ms(r['ttft_p50_ms'])} | {_ms(r['ttft_p90_ms'])} "
            f"| {r['starts_per_s']:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"
