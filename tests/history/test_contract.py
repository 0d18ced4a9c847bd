"""What every history does, checked on each (memory, SQLite, PostgreSQL): order, scoping, bounds, listing, deleting."""

from __future__ import annotations

import secrets
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.history.helpers import msg
from tokenrelay.history.base import History
from tokenrelay.messages import (
    ErrorPart,
    FinishPart,
    MetadataPart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UsagePart,
    text_of,
)


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


EVERY_KIND_OF_PART = (
    ReasoningPart("let me think\x00\ud800"),
    TextPart("Looking it up: é🙂\x00"),
    ToolCallPart("call_1", "search", '{"q": "\\u0000 café"}'),
    MetadataPart({"agent": "researcher", "previous_agent": "triage"}),
    ToolResultPart("call_1", "out\udfff", is_error=True),
    TextPart("Done \ud83d."),
    UsagePart(12, 34),
    ErrorPart("rate_limited", "slow down \x00", retryable=True),
    FinishPart("error"),
)


async def test_an_answer_reads_back_with_every_part_and_character(history: History) -> None:
    await history.add("ann", "c", msg("user", "find \x00 and \ud800 for me"))
    text = text_of(EVERY_KIND_OF_PART)
    await history.add("ann", "c", msg("assistant", text, status="failed", parts=EVERY_KIND_OF_PART))
    [question, answer] = await history.load("ann", "c")
    assert (question.content, question.parts) == ("find \x00 and \ud800 for me", ())
    assert (answer.content, answer.parts) == (text, EVERY_KIND_OF_PART)
    [conv] = await history.conversations("ann")
    assert conv.title.startswith("find ")  # a label: what it cannot hold is replaced, the message itself is not


async def test_an_answer_goes_only_into_a_conversation_that_is_there(history: History) -> None:
    assert await history.add("ann", "c", msg("assistant", "orphan"), create=False) is False
    assert await history.load("ann", "c") == []
    assert await history.conversations("ann") == []
    assert await history.add("ann", "c", msg("user", "q")) is True
    assert await history.add("ann", "c", msg("assistant", "a"), create=False) is True
    assert [m.content for m in await history.load("ann", "c")] == ["q", "a"]
    assert await history.add("bob", "c", msg("assistant", "not bob's"), create=False) is False


_ANY_CHARACTER = st.one_of(
    st.characters(exclude_categories=[]),  # surrogates included, which hypothesis leaves out by default
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\U0001f642", "\ufffd"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(_ANY_CHARACTER, max_size=40), min_size=1, max_size=4))
async def test_any_text_reads_back_character_for_character(history: History, texts: list[str]) -> None:
    conversation = secrets.token_hex(8)
    parts = tuple(TextPart(t) if i % 2 == 0 else ReasoningPart(t) for i, t in enumerate(texts))
    content = text_of(parts)
    await history.add("ann", conversation, msg("user", texts[0]))
    await history.add("ann", conversation, msg("assistant", content, parts=parts))
    [question, answer] = await history.load("ann", conversation)
    assert question.content == texts[0]
    assert (answer.content, answer.parts) == (content, parts)
