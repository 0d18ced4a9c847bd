"""The SQL history's batched load (``sql_reads.load_many``): the last messages of many conversations in one query,
on SQLite and the real PostgreSQL, and only those messages read."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert

from tokenrelay.history.memory import MemoryHistory
from tokenrelay.history.sql import SQLHistory, conversations, messages
from tokenrelay.history.sql_reads import load_many

LIMIT = 5
NOW = datetime(2026, 12, 3, tzinfo=UTC)


async def store(history: SQLHistory, user_id: str, lengths: dict[str, int]) -> None:
    """Conversations of ``lengths`` messages for ``user_id``, written straight to the tables."""
    async with history.engine.begin() as conn:
        await conn.execute(
            insert(conversations),
            [{"user_id": user_id, "id": c, "title": "", "created_at": NOW, "updated_at": NOW} for c in lengths],
        )
        await conn.execute(insert(messages), rows(user_id, lengths))


def rows(user_id: str, lengths: dict[str, int]) -> list[dict[str, object]]:
    """The messages of conversations of ``lengths``, taking turns (their ids interleave, as in a live database)."""
    turns = itertools.zip_longest(*([(c, i) for i in range(n)] for c, n in lengths.items()))
    return [
        {
            "user_id": user_id,
            "conversation_id": conversation,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"{conversation}-{i}",
            "status": "complete",
            "created_at": NOW,
        }
        for turn in turns
        for conversation, i in filter(None, turn)
    ]


async def test_a_batched_load_gives_each_conversation_its_last_messages(database: tuple[str, str | None]) -> None:
    url, schema = database
    history = SQLHistory(url, schema=schema, max_messages=LIMIT)
    await history.start()
    lengths = {"empty": 0, "short": 3, "full": LIMIT, "over": LIMIT + 1, "long": 4 * LIMIT + 2}
    try:
        await store(history, "ann", lengths)
        await store(history, "bob", {"long": 3, "short": 9})  # the same conversation ids, another user's
        keys = [("ann", c) for c in ("long", "missing", "short", "over", "full", "empty", "long")]
        async with history.engine.connect() as conn:
            batched = await conn.run_sync(load_many, messages, keys, LIMIT)
            one_by_one = [(await conn.run_sync(load_many, messages, [key], LIMIT))[0] for key in keys]
    finally:
        await history.close()

    expected = [[f"{c}-{i}" for i in range(max(0, lengths.get(c, 0) - LIMIT), lengths.get(c, 0))] for _, c in keys]
    assert [[m.content for m in ms] for ms in batched] == expected
    assert [[m.content for m in ms] for ms in one_by_one] == expected
    assert batched == one_by_one  # every field as the one-conversation load gives it
    long = lengths["long"]
    assert [m.role for m in batched[0]] == ["user" if i % 2 == 0 else "assistant" for i in range(long - LIMIT, long)]


def _steps(path: Path, keys: list[tuple[str, str]]) -> int:
    """SQLite virtual-machine steps (in hundreds) of one batched load of ``keys``: what the query reads."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            steps = 0

            def count() -> int:
                nonlocal steps
                steps += 1
                return 0

            raw.set_progress_handler(count, 100)
            found = load_many(conn, messages, keys, LIMIT)
            raw.set_progress_handler(None, 0)
    finally:
        engine.dispose()
    assert [len(ms) for ms in found] == [LIMIT] * len(keys)
    return steps


async def test_a_batched_load_reads_the_window_not_the_whole_conversation(tmp_path: Path) -> None:
    """Ranking every message of the conversations (row_number() over each) read a long conversation whole: this load
    of two conversations of 20,000 messages took 667 times the steps of two of 20 (40,020 against 60 hundreds). The
    load searches each conversation's index for its window and reads only that."""
    figures = {}
    for size in (4 * LIMIT, 4_000 * LIMIT):
        path = tmp_path / f"{size}.db"
        history = SQLHistory(f"sqlite:///{path}", max_messages=LIMIT)
        await history.start()
        try:
            await store(history, "ann", {"a": size, "b": size, "c": 3 * LIMIT})
        finally:
            await history.close()
        figures[size] = _steps(path, [("ann", "a"), ("ann", "b"), ("ann", "c")])
    small, large = figures.values()
    assert large <= 2 * small + 5, figures


def test_a_history_keeping_no_messages_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_messages must be at least 1, not 0"):
        SQLHistory(f"sqlite:///{tmp_path}/h.db", max_messages=0)
    with pytest.raises(ValueError, match="at least 1, not -1 and 10000"):
        MemoryHistory(max_messages=-1)
    with pytest.raises(ValueError, match="at least 1, not 200 and 0"):
        MemoryHistory(max_conversations=0)
