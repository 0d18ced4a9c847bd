"""A burst of run starts and answer saves against a history: what the default SQLite history costs a run.

    python -m bench.history_burst [--runs 1000] [--history sqlite|memory|postgresql] [--pg-url URL] [--new]

Each of ``--runs`` conversations asks its question at once (what ``POST /api/chat/stream`` does before a run
starts: load the conversation, store the question), then every answer is saved at once (what the end of each run
does). Prints starts/s, the p50/p90 of a start, and saves/s.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from tokenrelay.history.base import History
from tokenrelay.history.conversation import Conversations
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.runs.base import RunOutcome


async def _timed_ask(conversations: Conversations, i: int, new: bool) -> float:
    started = time.perf_counter()
    await conversations.ask("bench", f"c{i}", f"question {i}", new=new)
    return time.perf_counter() - started


async def burst(history: History, runs: int, *, new: bool = False) -> dict[str, float]:
    await history.start()
    conversations = Conversations(history)
    try:
        started = time.perf_counter()
        latencies = sorted(await asyncio.gather(*(_timed_ask(conversations, i, new) for i in range(runs))))
        asked = time.perf_counter() - started
        outcomes = [RunOutcome(f"r{i}", "bench", f"c{i}", f"answer {i} " * 20, "stop", None, None) for i in range(runs)]
        started = time.perf_counter()
        await asyncio.gather(*(conversations.save_answer(o) for o in outcomes))
        saved = time.perf_counter() - started
        assert len(await history.load("bench", f"c{runs - 1}")) == 2  # the question and its answer, both there
    finally:
        await history.close()
    return {
        "starts_per_s": runs / asked,
        "start_p50_ms": statistics.median(latencies) * 1000,
        "start_p90_ms": latencies[int(len(latencies) * 0.9)] * 1000,
        "saves_per_s": runs / saved,
    }


async def _postgres(url: str, runs: int) -> dict[str, float]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from tokenrelay.history.sql import SQLHistory, normalize_url

    schema = f"tokenrelay_bench_{secrets.token_hex(4)}"
    engine = create_async_engine(normalize_url(url))
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        return await burst(SQLHistory(url, schema=schema), runs)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--history", choices=["sqlite", "memory", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--new", action="store_true", help="new conversations: the server made up their ids")
    args = parser.parse_args()
    if args.history == "memory":
        figures = asyncio.run(burst(MemoryHistory(), args.runs, new=args.new))
    elif args.history == "postgresql":
        figures = asyncio.run(_postgres(args.pg_url, args.runs))
    else:
        from tokenrelay.history.sql import SQLHistory

        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(burst(SQLHistory(f"sqlite:///{Path(tmp) / 'bench.db'}"), args.runs, new=args.new))
    print(f"{args.history}, {args.runs} runs: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
