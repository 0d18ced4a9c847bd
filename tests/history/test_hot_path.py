"""A run's start off the history's hot path, on a real SQLite file and a real PostgreSQL schema: a new conversation
is not loaded, loads arriving together are one query, a question is written while its run starts (and read back
by whatever reads after it), its answer is saved after it, and a question the database refuses fails cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.history.conftest import MAX_MESSAGES
from tests.history.helpers import msg
from tokenrelay.errors import StoreUnavailable
from tokenrelay.history.conversation import Conversations
from tokenrelay.history.sql import SQLHistory
from tokenrelay.runs import RunOutcome

WAIT_S = 10.0  # generous: the machine may be loaded; nothing here waits this long when it works


@pytest.fixture
async def sql(database: tuple[str, str | None]) -> AsyncIterator[SQLHistory]:
    url, schema = database
    history = SQLHistory(url, schema=schema, max_messages=MAX_MESSAGES)
    await history.start()
    try:
        yield history
    finally:
        await history.close()


WRITING = " -- (in a write's transaction)"


@contextlib.contextmanager
def statements(history: SQLHistory) -> Iterator[list[str]]:
    """The SQL statements the history runs meanwhile: on its engine, and on its writing connection's (a SQLite file's
    writes have a connection and an engine of their own), marked when in a write's transaction there."""
    seen: list[str] = []
    writer = history._recent.writer_engine

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        writing = conn.engine is writer and conn.in_transaction() and conn.get_transaction().is_active
        seen.append(" ".join(statement.split()) + (WRITING if writing else ""))

    engines = [history.engine.sync_engine, *([writer] if writer is not None else [])]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def loads(seen: list[str]) -> list[str]:
    """The conversation loads among ``seen`` (a write's own reads, done in its transaction, are not loads)."""
    shapes = ("ORDER BY messages.id DESC", "WITH wanted")  # sql_reads.load_many: one conversation, many
    return [s for s in seen if any(shape in s for shape in shapes) and not s.endswith(WRITING)]


@contextlib.asynccontextmanager
async def writes_held(history: SQLHistory) -> AsyncIterator[None]:
    """The history's writes wait (another transaction holds the write lock) until the block ends; reads go on."""
    async with history.engine.connect() as conn:
        if history.dialect == "sqlite":
            await conn.execute(
                text("INSERT INTO conversations VALUES ('lock', 'lock', '', '2026-01-01', '2026-01-01')")
            )
        else:
            await conn.execute(text("LOCK TABLE conversations IN SHARE ROW EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await conn.rollback()


def answer(conversation_id: str, text_: str) -> RunOutcome:
    return RunOutcome(f"r-{conversation_id}", "ann", conversation_id, text_, "stop", None, None)


async def contents(history: SQLHistory, conversation_id: str) -> list[str]:
    return [m.content for m in await history.load("ann", conversation_id)]


async def test_a_new_conversation_is_not_loaded(sql: SQLHistory) -> None:
    conversations = Conversations(sql)
    with statements(sql) as seen:
        asked = await conversations.ask("ann", "fresh", "hello", new=True)
    assert [(m.role, m.content) for m in asked] == [("user", "hello")]
    assert loads(seen) == []
    assert await contents(sql, "fresh") == ["hello"]
    with statements(sql) as seen:
        await conversations.ask("ann", "fresh", "again")  # a conversation the client names is loaded
    assert len(loads(seen)) == 1  # (SQLite keeps a conversation from its first answer on: none yet here)


async def test_loads_arriving_together_are_one_query_with_each_conversations_own_messages(sql: SQLHistory) -> None:
    for c in range(12):
        for i in range(c % 3 + (MAX_MESSAGES if c == 5 else 0)):
            await sql.add("ann", f"c{c}", msg("user", f"c{c} m{i}"))
    await sql.add("bob", "c1", msg("user", "bob's own c1"))
    keys = [("ann", f"c{c}") for c in range(12)] + [("bob", "c1"), ("ann", "c3"), ("ann", "none")]
    one_by_one = [await sql.load(u, c) for u, c in keys]
    with statements(sql) as seen:
        together = await asyncio.gather(*(sql.load(u, c) for u, c in keys))
    assert together == one_by_one
    assert [m.content for m in together[5]] == [f"c5 m{i}" for i in range(2, 2 + MAX_MESSAGES)]  # the last ones
    assert [m.content for m in together[12]] == ["bob's own c1"]
    assert len(loads(seen)) <= 2  # the first load alone, then the others together


async def test_a_question_is_written_while_its_run_starts_and_read_back_after(sql: SQLHistory) -> None:
    conversations = Conversations(sql)
    await conversations.ask("ann", "warm", "a first write that succeeds", new=True)
    async with writes_held(sql):
        # The write cannot commit yet: the question is asked all the same, and what reads after it waits for it.
        asked = await asyncio.wait_for(conversations.ask("ann", "c", "q1", new=True), WAIT_S)
        assert [m.content for m in asked] == ["q1"]
        read = asyncio.ensure_future(sql.load("ann", "c"))
        saved = asyncio.ensure_future(conversations.save_answer(answer("c", "a1")))
        await asyncio.sleep(0.2)
        assert not read.done()
        assert not saved.done()
    assert [m.content for m in await asyncio.wait_for(read, WAIT_S)][:1] == ["q1"]
    await asyncio.wait_for(saved, WAIT_S)
    assert await contents(sql, "c") == ["q1", "a1"]  # the answer after its question
    async with writes_held(sql):
        await asyncio.wait_for(conversations.ask("ann", "c", "q2"), WAIT_S)
        # A follow-up asked before the last question is committed waits for it, and has it in its context.
        follow_up = asyncio.ensure_future(conversations.ask("ann", "c", "q3"))
        await asyncio.sleep(0.2)
        assert not follow_up.done()
    assert [m.content for m in await asyncio.wait_for(follow_up, WAIT_S)] == ["q1", "a1", "q2", "q3"]
    assert await contents(sql, "c") == ["q1", "a1", "q2", "q3"]


async def refuse_question(history: SQLHistory, question: str) -> None:
    """A trigger in the database refuses to store a message whose content is ``question``."""
    async with history.engine.begin() as conn:
        if history.dialect == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content = :q "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END".replace(":q", f"'{question}'")
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.content = "
                    f"'{question}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text("CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse()")
            )


async def test_a_question_the_history_refuses_fails_its_answer_and_then_refuses_new_runs(sql: SQLHistory) -> None:
    await refuse_question(sql, "refused")
    conversations = Conversations(sql)
    asked = await conversations.ask("ann", "c", "refused", new=True)  # the run starts before the write fails
    assert [m.content for m in asked] == ["refused"]
    with pytest.raises(StoreUnavailable):  # the done frame says "saved": false
        await asyncio.wait_for(conversations.save_answer(answer("c", "its answer")), WAIT_S)
    assert await contents(sql, "c") == []  # neither the question nor an answer without its question
    # From then on a question waits for its write: a refused one is refused before any run starts.
    with pytest.raises(Exception, match="refused"):
        await conversations.ask("ann", "d", "refused", new=True)
    assert await contents(sql, "d") == []
    await conversations.ask("ann", "d", "fine", new=True)  # written, and waited for
    assert await contents(sql, "d") == ["fine"]
    async with writes_held(sql):  # a write succeeded: questions no longer wait for their writes
        await asyncio.wait_for(conversations.ask("ann", "e", "quick", new=True), WAIT_S)
    await conversations.save_answer(answer("e", "its answer"))
    assert await contents(sql, "e") == ["quick", "its answer"]


async def test_a_chat_started_without_a_conversation_id_loads_nothing_and_saves_question_then_answer(
    sql: SQLHistory,
) -> None:
    from tokenrelay.backends import ScriptedBackend
    from tokenrelay.events import FinishEvent, TextDelta
    from tokenrelay.server import Relay, Settings

    relay = Relay(
        ScriptedBackend([TextDelta("answer"), FinishEvent("stop")]), Settings(backend="synthetic"), history=sql
    )
    async with relay.lifespan():
        with statements(sql) as seen:
            info = await relay.start_chat("question", user_id="ann", conversation_id=None)
            await asyncio.wait_for(relay.runs.wait(info.run_id), WAIT_S)
        assert loads(seen) == []
        assert await contents(sql, info.conversation_id) == ["question", "answer"]
        with statements(sql) as seen:
            again = await relay.start_chat("more", user_id="ann", conversation_id=info.conversation_id)
            await asyncio.wait_for(relay.runs.wait(again.run_id), WAIT_S)
        assert len(loads(seen)) == (0 if sql.dialect == "sqlite" else 1)  # SQLite: kept since its answer's write
        assert await contents(sql, info.conversation_id) == ["question", "answer", "more", "answer"]
