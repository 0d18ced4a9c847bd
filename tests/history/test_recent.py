"""A follow-up starts without reading its conversation when this process wrote it last (history.recent), and never
from a stale copy: another connection or process writing, a delete, a failed write all send the next load to the
database. On a real SQLite file (and PostgreSQL, which keeps nothing: it reads every time)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.history.conftest import MAX_MESSAGES
from tests.history.helpers import msg
from tests.history.test_hot_path import WAIT_S, answer, loads, refuse_question, statements, writes_held
from tokenrelay.history.conversation import Conversations
from tokenrelay.history.sql import SQLHistory
from tokenrelay.messages import PausedPart, TextPart, ToolCallPart, UsagePart


@pytest.fixture
async def sql(database: tuple[str, str | None]) -> AsyncIterator[SQLHistory]:
    url, schema = database
    history = SQLHistory(url, schema=schema, max_messages=MAX_MESSAGES)
    await history.start()
    try:
        yield history
    finally:
        await history.close()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "h.db"


@pytest.fixture
async def lite(db_file: Path) -> AsyncIterator[SQLHistory]:
    history = SQLHistory(f"sqlite:///{db_file}", max_messages=MAX_MESSAGES)
    await history.start()
    try:
        yield history
    finally:
        await history.close()


@pytest.fixture
async def other(db_file: Path, lite: SQLHistory) -> AsyncIterator[SQLHistory]:
    """A second history on the same file: another connection, as another worker would be."""
    history = SQLHistory(f"sqlite:///{db_file}", max_messages=MAX_MESSAGES)
    await history.start()
    try:
        yield history
    finally:
        await history.close()


async def answered(conversations: Conversations, conversation_id: str, question: str, text: str) -> None:
    await conversations.ask("ann", conversation_id, question)
    await asyncio.wait_for(conversations.save_answer(answer(conversation_id, text)), WAIT_S)


async def test_a_follow_up_starts_without_reading_what_this_process_wrote(sql: SQLHistory) -> None:
    from tokenrelay.backends import ScriptedBackend
    from tokenrelay.events import FinishEvent, TextDelta
    from tokenrelay.server import Relay, Settings

    relay = Relay(ScriptedBackend([TextDelta("ok"), FinishEvent("stop")]), Settings(backend="synthetic"), history=sql)
    async with relay.lifespan():
        first = await relay.start_chat("one", user_id="ann", conversation_id="c")
        await asyncio.wait_for(relay.runs.wait(first.run_id), WAIT_S)  # its answer is stored before its done frame
        for question in ("two", "three"):
            with statements(sql) as seen:
                asked = await relay.conversations.ask("ann", "c", question)
            reads = [s for s in seen if s.startswith("SELECT") and "FROM messages" in s]
            assert len(reads) == (0 if sql.dialect == "sqlite" else 1)  # PostgreSQL: other instances may write
            assert [m.content for m in asked][-2:] == ["ok", question]
            await asyncio.wait_for(relay.conversations.save_answer(answer("c", "ok")), WAIT_S)
    assert [m.content for m in await sql.load("ann", "c")] == ["ok", "two", "ok", "three", "ok"]  # the last five


async def test_what_is_kept_is_what_a_read_gives(lite: SQLHistory, other: SQLHistory) -> None:
    conversations = Conversations(lite)
    await conversations.ask("ann", "c", "weather?")
    parts = (
        TextPart("let me see"),
        ToolCallPart("t1", "weather", '{"city": "Oslo"}'),
        PausedPart("{}", "scripted", 2e9, seq=7),
    )
    await lite.add("ann", "c", msg("assistant", "let me see", run_id="r1", status="waiting", parts=parts), create=False)
    final = (TextPart("sunny"), UsagePart(3, 4))
    await lite.add("ann", "c", msg("assistant", "sunny", run_id="r1", parts=final, output_tokens=4), create=False)
    await conversations.ask("ann", "c", "and tomorrow? \x00\ud800")  # appended to what is kept
    with statements(lite) as seen:
        kept = await lite.load("ann", "c")
    assert loads(seen) == []
    assert [m.content for m in kept] == ["weather?", "sunny", "and tomorrow? \x00\ud800"]  # the waiting one replaced
    assert kept == await other.load("ann", "c")
    await asyncio.wait_for(conversations.save_answer(answer("c", "rain")), WAIT_S)
    for i in range(MAX_MESSAGES + 2):  # past the bound: the window moves
        await answered(conversations, "c", f"q{i} \x00\ud800", f"a{i}")
    with statements(lite) as seen:
        kept = await lite.load("ann", "c")
    assert loads(seen) == []
    assert kept == await other.load("ann", "c")  # read from the file by another connection
    assert len(kept) == MAX_MESSAGES


async def test_another_connection_writing_sends_the_next_load_to_the_database(
    lite: SQLHistory, other: SQLHistory
) -> None:
    conversations = Conversations(lite)
    await answered(conversations, "c", "q1", "a1")
    await other.add("ann", "c", msg("user", "from another worker"))
    with statements(lite) as seen:
        asked = await conversations.ask("ann", "c", "q2")
    assert len(loads(seen)) == 1
    assert [m.content for m in asked] == ["q1", "a1", "from another worker", "q2"]
    await asyncio.wait_for(conversations.save_answer(answer("c", "a2")), WAIT_S)
    with statements(lite) as seen:  # kept again from that answer on
        assert [m.content for m in await lite.load("ann", "c")][-2:] == ["q2", "a2"]
    assert loads(seen) == []


async def test_another_process_writing_sends_the_next_load_to_the_database(lite: SQLHistory, db_file: Path) -> None:
    conversations = Conversations(lite)
    await answered(conversations, "c", "q1", "a1")
    script = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        'db.execute("INSERT INTO messages (user_id, conversation_id, role, content, status, created_at) '
        "VALUES ('ann', 'c', 'user', 'from a tool', 'complete', '2026-01-01 00:00:00.000000')\"); db.commit()"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(db_file))
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert [m.content for m in await lite.load("ann", "c")] == ["q1", "a1", "from a tool"]


async def test_a_delete_here_or_elsewhere_leaves_nothing_kept(lite: SQLHistory, other: SQLHistory) -> None:
    conversations = Conversations(lite)
    await answered(conversations, "c", "q", "a")
    await answered(conversations, "d", "q", "a")
    assert await lite.delete("ann", "c")
    assert await lite.load("ann", "c") == []
    assert ("ann", "c") not in lite._recent
    assert [m.content for m in await lite.load("ann", "d")] == ["q", "a"]
    assert await other.delete("ann", "d")
    assert await lite.load("ann", "d") == []
    # An answer whose conversation was deleted meanwhile is not written, and nothing of it is kept.
    await answered(conversations, "e", "q", "a")
    await conversations.ask("ann", "e", "q2")
    assert [m.content for m in await lite.load("ann", "e")] == ["q", "a", "q2"]  # (the question is written)
    await other.delete("ann", "e")
    await asyncio.wait_for(conversations.save_answer(answer("e", "too late")), WAIT_S)
    assert await lite.load("ann", "e") == []


async def test_a_write_that_fails_keeps_nothing_stale(lite: SQLHistory) -> None:
    conversations = Conversations(lite)
    await answered(conversations, "c", "q1", "a1")
    await refuse_question(lite, "refused")  # (on another connection: what was kept is forgotten)
    await answered(conversations, "c", "q2", "a2")
    with pytest.raises(Exception, match="refused"):
        await lite.add("ann", "c", msg("user", "refused"))
    with statements(lite) as seen:
        assert [m.content for m in await lite.load("ann", "c")] == ["q1", "a1", "q2", "a2"]
    assert len(loads(seen)) == 1  # after a failed write nothing kept is trusted


async def test_a_load_while_a_write_waits_for_the_lock_reads_without_waiting(lite: SQLHistory) -> None:
    conversations = Conversations(lite)
    await answered(conversations, "c", "q1", "a1")
    await answered(conversations, "d", "q1", "a1")
    async with writes_held(lite):
        stuck = asyncio.ensure_future(lite.add("ann", "d", msg("user", "stuck")))
        await asyncio.sleep(0.1)
        assert not stuck.done()
        loaded = await asyncio.wait_for(lite.load("ann", "c"), WAIT_S)  # read on another connection (WAL)
        assert [m.content for m in loaded] == ["q1", "a1"]
    await asyncio.wait_for(stuck, WAIT_S)
    assert [m.content for m in await lite.load("ann", "d")] == ["q1", "a1", "stuck"]


async def test_what_is_kept_stays_under_its_bound(lite: SQLHistory, other: SQLHistory) -> None:
    lite._recent.max_bytes = 5_000
    conversations = Conversations(lite)
    for i in range(30):
        await answered(conversations, f"c{i}", f"question {i}", "an answer " * 20)
        assert lite._recent.bytes <= 5_000
    assert ("ann", "c29") in lite._recent
    assert ("ann", "c0") not in lite._recent  # the least recently used went first
    assert await lite.load("ann", "c0") == await other.load("ann", "c0")
    huge = "x" * 10_000
    await answered(conversations, "c29", "and now?", huge)  # bigger than the bound: not kept at all
    assert ("ann", "c29") not in lite._recent
    assert (await lite.load("ann", "c29"))[-1].content == huge


def test_a_sqlite_file_in_memory_or_postgresql_keeps_nothing(tmp_path: Path) -> None:
    assert SQLHistory(f"sqlite:///{tmp_path}/x.db")._recent.enabled
    assert not SQLHistory("sqlite:///:memory:")._recent.enabled
    assert not SQLHistory("postgresql://postgres@127.0.0.1:5432/test")._recent.enabled
    assert sqlite3.sqlite_version_info >= (3, 8)  # PRAGMA data_version
