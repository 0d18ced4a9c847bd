"""The in-memory history: what only it does (its bounds, its copies). What every history does is in
``test_contract.py``, which runs on this one too."""

from __future__ import annotations

import time

from tests.history.helpers import msg
from tokenrelay.history.memory import MemoryHistory


async def test_it_needs_no_start_and_forgets_the_least_recently_used_conversations_first() -> None:
    history = MemoryHistory(max_conversations=2)
    await history.add("ann", "a", msg("user", "a"))
    await history.add("ann", "b", msg("user", "b"))
    await history.load("ann", "a")  # reading a conversation makes it recently used
    await history.add("ann", "c", msg("user", "c"))
    assert sorted(c.id for c in await history.conversations("ann")) == ["a", "c"]
    assert await history.load("ann", "b") == []


async def test_the_oldest_messages_go_past_the_bound_but_the_conversation_keeps_its_title() -> None:
    history = MemoryHistory(max_messages=2)
    for text in ("first question", "answer", "second question"):
        await history.add("ann", "c", msg("user" if "question" in text else "assistant", text))
    assert [m.content for m in await history.load("ann", "c")] == ["answer", "second question"]
    [conversation] = await history.conversations("ann")
    assert conversation.title == "first question"


async def test_a_conversation_started_by_an_answer_has_no_title() -> None:
    history = MemoryHistory()
    await history.add("ann", "c", msg("assistant", "hello"))
    [conversation] = await history.conversations("ann")
    assert conversation.title == ""


async def test_load_returns_a_copy() -> None:
    history = MemoryHistory()
    await history.add("ann", "c", msg("user", "hi"))
    loaded = await history.load("ann", "c")
    loaded.clear()
    assert [m.content for m in await history.load("ann", "c")] == ["hi"]


async def test_a_late_message_does_not_move_the_conversation_back_in_time() -> None:
    history = MemoryHistory()
    now = time.time()
    await history.add("ann", "c", msg("user", "hi", at=now))
    await history.add("ann", "c", msg("assistant", "late", at=now - 60))
    [conversation] = await history.conversations("ann")
    assert (conversation.created_at, conversation.updated_at) == (now, now)
