"""A burst of run starts and answer saves against a history: what the default SQLite history costs a run.

    python -m bench.history_burst [--runs 1000] [--history sqlite|memory|postgresql] [--pg-url URL] [--new] [--idle]
                                  [--stored N] [--waves K]

Each of ``--runs`` conversations asks its question at once (what ``POST /api/chat/stream`` does before a run
starts: load the conversation, store the question), then every answer is saved at once (what the end of each run
does). Prints starts/s, the p50/p90 of a start, and saves/s.

``--idle``: one start at a time instead, each once the one before has its answer saved: the median and p90 of a
follow-up's start (the second question of a conversation) and of a new conversation's, in turns.

``--waves K``: ``--runs`` conversations in waves of K at once, each wave once the one before has its answers saved
(a server under a steady load, whose writes batch a few at a time): the median and p90 of a wave's starts and of
its saves.

``--stored N`` (SQL histories): the database holds N other conversations of two messages each before the burst, as
one that has served for a while does: what a start or a save costs must not grow with them.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tokenrelay.history.base import History
from tokenrelay.history.conversation import Conversations
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.runs.base import RunOutcome


async def _timed_ask(conversations: Conversations, i: int, new: bool) -> float:
    started = time.perf_counter()
    await conversations.ask("bench", f"c{i}", f"question {i}", new=new)
    return time.perf_counter() - started


def _p50_p90(name: str, seconds: list[float]) -> dict[str, float]:
    """The median and p90 of ``seconds``, in ms, as ``{name}_p50_ms`` and ``{name}_p90_ms``."""
    ordered = sorted(seconds)
    return {
        f"{name}_p50_ms": statistics.median(ordered) * 1000,
        f"{name}_p90_ms": ordered[int(len(ordered) * 0.9)] * 1000,
    }


async def _fill(history: History, stored: int) -> None:
    """``stored`` earlier conversations of a question and an answer each, written straight to the tables."""
    if not stored:
        return
    from datetime import UTC, datetime

    from tokenrelay.history.sql import SQLHistory, conversations, messages

    assert isinstance(history, SQLHistory)
    when = datetime.now(UTC)
    step = 10_000
    async with history.engine.begin() as conn:
        for first in range(0, stored, step):
            ids = range(first, min(first + step, stored))
            rows = [
                {"user_id": "bench", "id": f"old{i}", "title": "", "created_at": when, "updated_at": when} for i in ids
            ]
            await conn.execute(conversations.insert(), rows)
            message = {"status": "complete", "created_at": when, "parts": None, "encoding": None}
            await conn.execute(
                messages.insert(),
                [
                    message
                    | {
                        "user_id": "bench",
                        "conversation_id": f"old{i}",
                        "role": role,
                        "content": role,
                        "run_id": f"old-r{i}",
                    }
                    for i in ids
                    for role in ("user", "assistant")
                ],
            )


async def burst(history: History, runs: int, *, new: bool = False, stored: int = 0) -> dict[str, float]:
    await history.start()
    await _fill(history, stored)
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
    return {"starts_per_s": runs / asked, **_p50_p90("start", latencies), "saves_per_s": runs / saved}


async def idle(history: History, runs: int, *, stored: int = 0) -> dict[str, float]:
    await history.start()
    await _fill(history, stored)
    conversations = Conversations(history)
    follow_ups: list[float] = []
    news: list[float] = []
    try:
        for i in range(runs):
            for new, times in ((True, news), (False, follow_ups)):
                if not new:  # a conversation with one question answered: the follow-up is its second
                    await conversations.ask("bench", f"c{i}", "first")
                    await conversations.save_answer(RunOutcome(f"a{i}", "bench", f"c{i}", "answer", "stop", None, None))
                times.append(await _timed_ask(conversations, i, new))
                run = f"r{i}-{new}"
                await conversations.save_answer(RunOutcome(run, "bench", f"c{i}", "answer", "stop", None, None))
    finally:
        await history.close()
    return _p50_p90("new", news) | _p50_p90("follow_up", follow_ups)


async def waves(history: History, runs: int, *, size: int, stored: int = 0) -> dict[str, float]:
    await history.start()
    await _fill(history, stored)
    conversations = Conversations(history)
    starts: list[float] = []
    saves: list[float] = []
    try:
        for first in range(0, runs, size):
            ids = [f"c{i}" for i in range(first, min(first + size, runs))]
            started = time.perf_counter()
            await asyncio.gather(*(conversations.ask("bench", i, f"question {i}", new=True) for i in ids))
            starts.append(time.perf_counter() - started)
            outcomes = [RunOutcome(f"r{i}", "bench", i, f"answer {i} " * 20, "stop", None, None) for i in ids]
            started = time.perf_counter()
            await asyncio.gather(*(conversations.save_answer(o) for o in outcomes))
            saves.append(time.perf_counter() - started)
    finally:
        await history.close()
    return _p50_p90("wave_start", starts) | _p50_p90("wave_save", saves)


async def _postgres(
    url: str, runs: int, measure: Callable[[History, int], Awaitable[dict[str, float]]]
) -> dict[str, float]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from tokenrelay.history.sql import SQLHistory, normalize_url

    schema = f"tokenrelay_bench_{secrets.token_hex(4)}"
    engine = create_async_engine(normalize_url(url))
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        return await measure(SQLHistory(url, schema=schema), runs)
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
    parser.add_argument("--idle", action="store_true", help="one start at a time: follow-ups and new conversations")
    parser.add_argument("--stored", type=int, default=0, help="other conversations stored before (SQL histories)")
    parser.add_argument("--waves", type=int, default=0, metavar="K", help="runs in waves of K at once")
    args = parser.parse_args()
    if args.waves < 0 or (args.waves and args.idle):
        parser.error("--waves takes a wave size of 1 or more, and not with --idle")
    if args.stored < 0:
        parser.error("--stored must be 0 or more")
    if args.stored and args.history == "memory":
        parser.error("--stored fills a SQL history's tables: use it with --history sqlite or postgresql")

    def measure(history: History, runs: int) -> Awaitable[dict[str, float]]:
        if args.idle:
            return idle(history, runs, stored=args.stored)
        if args.waves:
            return waves(history, runs, size=args.waves, stored=args.stored)
        return burst(history, runs, new=args.new, stored=args.stored)

    if args.history == "memory":
        figures = asyncio.run(measure(MemoryHistory(), args.runs))
    elif args.history == "postgresql":
        figures = asyncio.run(_postgres(args.pg_url, args.runs, measure))
    else:
        from tokenrelay.history.sql import SQLHistory

        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(measure(SQLHistory(f"sqlite:///{Path(tmp) / 'bench.db'}"), args.runs))
    stored = f", {args.stored:,} stored before" if args.stored else ""
    print(f"{args.history}, {args.runs} runs{stored}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
