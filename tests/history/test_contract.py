"""What every history does, checked on each (memory, SQLite, PostgreSQL): order, scoping, bounds, listing, deleting."""

from __future__ import annotations

import time

import pytest

from tests.history.helpers import msg
from tokenrelay.history.base import History


async def test_messages_are_kept_in_order_per_user_and_conversation(history: History) -> None:
    await history.add("ann", "c1", msg("user", "What is SSE?"))
    await history.add("ann", "c1", msg("assistant", "Server-Sent", status="cancelled", run_id="r1"))
    await history.add("bob", "c1", msg("user", "not ann's"))
    got = await history.load("ann", "c1")
    assert [(m.role, m.content, m.status, m.run_id) for m in got] == [
        ("user", "What is SSE?", "complete", None),
        ("assistant", "Server-Sent", "cancelled", "r1"),
    ]
    assert [m.content for m in await history.load("bob", "c1")] == ["not ann's"]
    assert await history.load("ann", "nope") == []


async def test_failed_answers_keep_their_error_and_usage(history: History) -> None:
    await history.add("ann", "c", msg("assistant", "part", status="failed", error_code="interrupted", output_tokens=7))
    [got] = await history.load("ann", "c")
    assert (got.status, got.error_code, got.output_tokens) == ("failed", "interrupted", 7)


async def test_loads_the_most_recent_messages_when_there_are_many(history: History) -> None:
    for i in range(8):
        await history.add("ann", "c", msg("user", f"m{i}"))
    assert [m.content for m in await history.load("ann", "c")] == ["m3", "m4", "m5", "m6", "m7"]


async def test_conversations_are_listed_most_recent_first_and_deleted_with_their_messages(
    history: History,
) -> None:
    now = time.time()
    await history.add("ann", "old", msg("user", "  first   question\n of all ", at=now - 10))
    await history.add("ann", "new", msg("user", "x" * 100, at=now - 5))
    await history.add("ann", "old", msg("assistant", "answer", at=now))  # a new message makes it the latest
    await history.add("bob", "b", msg("user", "bob's", at=now))
    listed = await history.conversations("ann")
    assert [c.id for c in listed] == ["old", "new"]
    assert listed[0].title == "first question of all"
    assert len(listed[1].title) == 80
    assert listed[1].title.endswith("…")
    assert listed[0].updated_at == pytest.approx(now, abs=1e-3)
    assert [c.id for c in await history.conversations("ann", limit=1)] == ["old"]
    assert await history.delete("bob", "old") is False  # not bob's
    assert await history.delete("ann", "old") is True
    assert await history.load("ann", "old") == []
    assert await history.delete("ann", "old") is False
    assert [c.id for c in await history.conversations("ann")] == ["new"]
