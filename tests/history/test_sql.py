"""The SQL history on SQLite and the real PostgreSQL: its rows, migrations, and the server's endpoints over it.

What every history does (order, scoping, bounds, listing, deleting) is checked in ``test_contract.py``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine

from tests.conftest import running_server
from tests.history.helpers import msg
from tests.server.helpers import payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.errors import StoreUnavailable
from tokenrelay.events import (
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.history.sql import SQLHistory, normalize_url
from tokenrelay.messages import FinishPart, PausedPart, TextPart, ToolCallPart, ToolResultPart
from tokenrelay.server import Relay, Settings, create_app


async def test_deleting_a_conversation_deletes_its_rows(database: tuple[str, str | None]) -> None:
    url, schema = database
    history = SQLHistory(url, schema=schema)
    await history.start()
    try:
        await history.add("ann", "old", msg("user", "question"))
        await history.add("ann", "old", msg("assistant", "answer"))
        assert await history.delete("ann", "old") is True
        async with history.engine.connect() as conn:
            orphans = await conn.execute(text("SELECT count(*) FROM messages WHERE conversation_id = 'old'"))
            assert orphans.scalar() == 0
    finally:
        await history.close()


def test_plain_urls_get_the_async_drivers() -> None:
    assert normalize_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert normalize_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    assert normalize_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"


HEAD = "0004"

V1_ROWS = [
    "INSERT INTO conversations (user_id, id, title, created_at, updated_at) "
    "VALUES ('ann', 'c1', 'hello', '2025-01-01 10:00:00', '2025-01-01 10:00:05')",
    "INSERT INTO messages (user_id, conversation_id, role, content, status, run_id, created_at) "
    "VALUES ('ann', 'c1', 'user', 'hello', 'complete', NULL, '2025-01-01 10:00:00')",
    "INSERT INTO messages (user_id, conversation_id, role, content, status, run_id, created_at) "
    "VALUES ('ann', 'c1', 'assistant', 'hi there', 'cancelled', 'run-1', '2025-01-01 10:00:05')",
]


async def test_an_upgrade_keeps_the_data_of_the_first_schema(database: tuple[str, str | None]) -> None:
    url, schema = database
    old = SQLHistory(url, schema=schema, migrate=False)
    await old.migrate("0001")  # the database as the first release left it, with data in it
    async with old.engine.begin() as conn:
        for row in V1_ROWS:
            await conn.execute(text(row))
        columns = await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("messages")])
        assert "error_code" not in columns
    await old.close()

    upgraded = SQLHistory(url, schema=schema)
    await upgraded.start()  # what a new release does at startup
    try:
        got = await upgraded.load("ann", "c1")
        assert [(m.role, m.content, m.status, m.run_id, m.error_code) for m in got] == [
            ("user", "hello", "complete", None, None),
            ("assistant", "hi there", "cancelled", "run-1", None),
        ]
        [conv] = await upgraded.conversations("ann")
        assert (conv.id, conv.title) == ("c1", "hello")
        await upgraded.add("ann", "c1", msg("assistant", "x", status="failed", error_code="model_error"))
        assert (await upgraded.load("ann", "c1"))[-1].error_code == "model_error"
        async with upgraded.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert version == HEAD
        await upgraded.start()  # at head already: nothing to do, nothing lost
        assert len(await upgraded.load("ann", "c1")) == 3
    finally:
        await upgraded.close()


async def test_instances_starting_together_migrate_once(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    stores = [SQLHistory(url, schema=schema) for _ in range(3)]
    try:
        await asyncio.gather(*(s.start() for s in stores))  # the advisory lock serializes them
        await stores[0].add("ann", "c", msg("user", "hi"))
        assert [m.content for m in await stores[2].load("ann", "c")] == ["hi"]
    finally:
        for s in stores:
            await s.close()


async def serve(tmp_path: Path, backend: object, **settings: object) -> tuple[Relay, object]:
    relay = Relay(
        backend,  # type: ignore[arg-type]
        Settings(backend="synthetic", database_url=f"sqlite:///{tmp_path}/server.db", **settings),  # type: ignore[arg-type]
    )
    return relay, running_server(create_app(relay=relay))


async def test_the_history_survives_a_restart_and_follow_ups_load_it(tmp_path: Path) -> None:
    first = ScriptedBackend([TextDelta("Paris."), FinishEvent("stop")])
    _, server = await serve(tmp_path, first)
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        body = {"message": "Capital of France?", "user_id": "ann", "conversation_id": "geo"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            await read_stream(r)
    again = ScriptedBackend([TextDelta("Lyon."), FinishEvent("stop")])
    _, server = await serve(tmp_path, again)
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        listed = (await client.get("/api/conversations", params={"user_id": "ann"})).json()["conversations"]
        assert [(c["id"], c["title"]) for c in listed] == [("geo", "Capital of France?")]
        body = {"message": "And the second city?", "user_id": "ann", "conversation_id": "geo"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            await read_stream(r)
        messages = (await client.get("/api/conversations/geo/messages", params={"user_id": "ann"})).json()
    assert [(m.role, m.content) for m in again.calls[0]] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And the second city?"),
    ]
    assert [(m["role"], m["content"], m["status"]) for m in messages["messages"]] == [
        ("user", "Capital of France?", "complete"),
        ("assistant", "Paris.", "complete"),
        ("user", "And the second city?", "complete"),
        ("assistant", "Lyon.", "complete"),
    ]


async def test_cancelled_and_failed_answers_are_saved_marked_and_conversations_can_be_deleted(
    tmp_path: Path,
) -> None:
    stopped = ScriptedBackend([TextDelta("half an"), Pause(60)])
    relay, server = await serve(tmp_path, stopped)
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        body = {"message": "hi", "user_id": "ann", "conversation_id": "c"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            async for _ in r.aiter_raw():
                break  # the answer has started: the user presses Stop
            run_id = r.headers["x-run-id"]
            stop = await client.post(f"/api/runs/{run_id}/cancel", params={"user_id": "ann"})
            assert stop.json()["cancelled"] is True
        await asyncio.wait_for(relay.runs.wait(run_id), 5)
        params = {"user_id": "ann"}
        messages = (await client.get("/api/conversations/c/messages", params=params)).json()["messages"]
        assert (messages[-1]["content"], messages[-1]["status"]) == ("half an", "cancelled")
        assert (await client.get("/api/conversations/c/messages", params={"user_id": "bob"})).status_code == 404
        assert (await client.delete("/api/conversations/c", params={"user_id": "bob"})).status_code == 404
        assert (await client.delete("/api/conversations/c", params=params)).status_code == 204
        assert (await client.get("/api/conversations/c/messages", params=params)).status_code == 404
        assert (await client.delete("/api/conversations/c", params=params)).status_code == 404
        assert (await client.get("/api/conversations", params={"limit": "0"})).status_code == 422

    failing = SyntheticBackend(tokens=5, interval_ms=0, fail_after=2)
    _, server = await serve(tmp_path, failing)
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        body = {"message": "hi", "user_id": "ann", "conversation_id": "f"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            assert payloads(await read_stream(r))[-1]["finish_reason"] == "error"
        last = (await client.get("/api/conversations/f/messages", params={"user_id": "ann"})).json()["messages"][-1]
    assert (last["content"], last["status"], last["error_code"]) == ("You said: ", "failed", "backend_error")


V2_ROWS = [
    "INSERT INTO conversations (user_id, id, title, created_at, updated_at) "
    "VALUES ('ann', 'c2', 'café?', '2025-02-01 10:00:00', '2025-02-01 10:00:05')",
    "INSERT INTO messages (user_id, conversation_id, role, content, status, run_id, error_code, output_tokens, "
    "created_at) VALUES ('ann', 'c2', 'user', 'café?', 'complete', NULL, NULL, NULL, '2025-02-01 10:00:00')",
    "INSERT INTO messages (user_id, conversation_id, role, content, status, run_id, error_code, output_tokens, "
    "created_at) VALUES ('ann', 'c2', 'assistant', 'Oui ☕', 'failed', 'run-2', 'model_error', 9, "
    "'2025-02-01 10:00:05')",
]


async def test_an_upgrade_keeps_the_text_only_messages_of_the_previous_schema(database: tuple[str, str | None]) -> None:
    url, schema = database
    old = SQLHistory(url, schema=schema, migrate=False)
    await old.migrate("0002")  # the schema the previous release left, with its rows
    async with old.engine.begin() as conn:
        for row in V2_ROWS:
            await conn.execute(text(row))
    await old.close()

    upgraded = SQLHistory(url, schema=schema)
    await upgraded.start()
    try:
        got = await upgraded.load("ann", "c2")
        assert [(m.role, m.content, m.status, m.run_id, m.error_code, m.output_tokens, m.parts) for m in got] == [
            ("user", "café?", "complete", None, None, None, ()),
            ("assistant", "Oui ☕", "failed", "run-2", "model_error", 9, ()),
        ]
        # The old rows are untouched (no encoding, no parts) and sit beside new ones that have both.
        await upgraded.add("ann", "c2", msg("user", "\x00?"))
        await upgraded.add("ann", "c2", msg("assistant", "ok", parts=(TextPart("ok"), FinishPart("stop"))))
        async with upgraded.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT content, encoding, parts FROM messages ORDER BY id"))).all()
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert version == HEAD
        assert [tuple(r) for r in rows] == [
            ("café?", None, None),
            ("Oui ☕", None, None),
            ('"\\u0000?"', "json", None),
            ("ok", None, '[{"type":"text","length":2},{"type":"finish","reason":"stop"}]'),
        ]
        assert [m.content for m in await upgraded.load("ann", "c2")][2:] == ["\x00?", "ok"]
    finally:
        await upgraded.close()


async def test_the_sqlite_file_is_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    history = SQLHistory(f"sqlite:///{tmp_path}/h.db")
    await history.start()
    try:
        async with history.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
    finally:
        await history.close()


TOOL_TURN = [
    ReasoningDelta("The user wants a search."),
    TextDelta("Searching \x00 now."),
    ToolCallStart("call_1", "search"),
    ToolCallArgsDelta("call_1", '{"q": '),
    ToolCallArgsDelta("call_1", '"sse"}'),
    ToolCallResult("call_1", "3 results"),
    TextDelta(" Found three \ud83d."),
    UsageEvent(7, 8),
    FinishEvent("stop"),
]


async def test_an_answer_is_served_back_as_its_parts_and_a_follow_up_gets_its_tool_turns(tmp_path: Path) -> None:
    _, server = await serve(tmp_path, ScriptedBackend(TOOL_TURN))
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        body = {"message": "search sse", "user_id": "ann", "conversation_id": "t"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            seen = payloads(await read_stream(r))
        got = (await client.get("/api/conversations/t/messages", params={"user_id": "ann"})).json()["messages"]
    streamed = "".join(str(p["delta"]) for p in seen if "delta" in p)
    question, answer = got
    assert question["parts"] == [{"type": "text", "text": "search sse"}]
    assert answer["content"] == streamed == "Searching \x00 now. Found three \ud83d."
    assert (answer["status"], answer["output_tokens"]) == ("complete", 8)
    assert answer["parts"] == [
        {"type": "reasoning", "text": "The user wants a search."},
        {"type": "text", "text": "Searching \x00 now."},
        {"type": "tool-call", "call_id": "call_1", "name": "search", "arguments": '{"q": "sse"}'},
        {"type": "tool-result", "call_id": "call_1", "output": "3 results", "is_error": False},
        {"type": "text", "text": " Found three \ud83d."},
        {"type": "usage", "input_tokens": 7, "output_tokens": 8},
        {"type": "finish", "reason": "stop"},
    ]

    again = ScriptedBackend([TextDelta("Sure."), FinishEvent("stop")])
    _, server = await serve(tmp_path, again)  # a restart: the parts come from the database
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        body = {"message": "more?", "user_id": "ann", "conversation_id": "t"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            await read_stream(r)
    earlier = again.calls[0][1]
    assert [p for p in earlier.parts if isinstance(p, ToolCallPart | ToolResultPart)] == [
        ToolCallPart("call_1", "search", '{"q": "sse"}'),
        ToolResultPart("call_1", "3 results"),
    ]


async def test_a_conversation_deleted_while_its_run_goes_stays_deleted(tmp_path: Path) -> None:
    relay, server = await serve(tmp_path, ScriptedBackend([TextDelta("half an"), Pause(60)]))
    async with server as url, httpx.AsyncClient(base_url=url) as client:  # type: ignore[attr-defined]
        params = {"user_id": "ann"}
        body = {"message": "hi", "conversation_id": "gone", **params}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            run_id = r.headers["x-run-id"]
            async for _ in r.aiter_raw():
                break  # the answer has started
            assert (await client.delete("/api/conversations/gone", params=params)).status_code == 204
            await relay.runs.cancel(run_id)  # the run ends and saves its partial answer: nowhere
            await asyncio.wait_for(relay.runs.wait(run_id), 5)
        assert (await client.get("/api/conversations/gone/messages", params=params)).status_code == 404
        assert (await client.get("/api/conversations", params=params)).json()["conversations"] == []


async def test_writes_arriving_together_are_stored_in_order_and_one_bad_write_fails_alone(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    history = SQLHistory(url, schema=schema)
    await history.start()
    try:
        await history.add("ann", "c", msg("user", "first"))
        bad = msg("assistant", "x", status="not a status, and longer than its column")
        writes = [history.add("ann", "c", msg("assistant", f"a{i}")) for i in range(20)]
        writes.insert(10, history.add("ann", "c", bad))
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(results[10], Exception)  # the write the database refuses, alone
        assert results[:10] + results[11:] == [True] * 20
        assert [m.content for m in await history.load("ann", "c")] == ["first", *(f"a{i}" for i in range(20))]
    finally:
        await history.close()


async def test_a_database_that_cannot_be_reached_is_unavailable_not_an_error(unused_tcp_port: int) -> None:
    history = SQLHistory(f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/test", migrate=False)
    try:
        with pytest.raises(StoreUnavailable):
            await history.check()
        with pytest.raises(StoreUnavailable):
            await history.load("ann", "c")
        with pytest.raises(StoreUnavailable):
            await history.add("ann", "c", msg("user", "q"))
    finally:
        await history.close()


async def test_batched_writes_and_loads_search_the_indexes_instead_of_reading_every_row(tmp_path: Path) -> None:
    """SQLite plans a row-value IN of several rows, ``(a, b) IN (VALUES (?, ?), ...)``, as a scan of the whole
    table. Every statement of a batch of writes (new conversations, follow-ups, waiting and final answers) and of a
    batch of loads must search an index instead: on a database that has served for a while, a scan a batch made each
    answer's save (and so its done frame) wait for a read of every stored row."""
    path = tmp_path / "h.db"
    history = SQLHistory(f"sqlite:///{path}")
    other = SQLHistory(f"sqlite:///{path}")  # loads through its own reader (nothing of the first one's kept)
    await history.start()
    await other.start()
    statements: list[tuple[str, Any]] = []

    def seen(_conn: object, _cursor: object, statement: str, parameters: Any, _ctx: object, many: bool) -> None:
        statements.append((statement, parameters[0] if many else parameters))

    keys = [f"c{i}" for i in range(6)]
    paused = PausedPart("{}", "scripted", 2e9, seq=3)
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        await asyncio.gather(*(history.add("ann", k, msg("user", "q", run_id=f"r{k}")) for k in keys))
        await asyncio.gather(
            *(
                history.add(
                    "ann",
                    k,
                    msg("assistant", "so far", run_id=f"r{k}", status="waiting", parts=(paused,)),
                    create=False,
                )
                for k in keys
            )
        )
        await asyncio.gather(
            *(history.add("ann", k, msg("assistant", "done", run_id=f"r{k}"), create=False) for k in keys)
        )
        await asyncio.gather(*(history.add("ann", k, msg("user", "more", run_id=f"s{k}"), create=False) for k in keys))
        loaded = await asyncio.gather(*(other.load("ann", k) for k in keys))
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
        await other.close()
        await history.close()
    assert [[m.content for m in ms] for ms in loaded] == [["q", "done", "more"]] * len(keys)

    batched = [(sql, params) for sql, params in statements if "IN (VALUES" in sql or "WITH wanted" in sql]
    tables = {name for sql, _ in batched for name in re.findall(r"\b(messages|conversations)\b", sql)}
    assert tables == {"messages", "conversations"}  # the batches did match several keys at once, in both tables
    assert any("WITH wanted" in sql for sql, _ in batched)  # and the loads were one query
    scans: list[tuple[str, str]] = []
    with sqlite3.connect(path) as db:
        for sql, params in batched:
            for *_, detail in db.execute(f"EXPLAIN QUERY PLAN {sql}", params):
                if re.match(r"SCAN (messages|conversations|older)\b", detail):
                    scans.append((detail, sql))
    assert scans == []


async def test_rows_handed_to_the_driver_as_tuples_are_stored_as_sqlalchemy_stores_them(
    database: tuple[str, str | None],
) -> None:
    """The history's inserts skip SQLAlchemy's per-row parameter work (``sql_rows.ManyRows``): the stored values,
    datetimes, NULLs and an upsert's update included, are the ones ``conn.execute(insert, rows)`` stores."""
    from datetime import UTC, datetime

    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from tokenrelay.history.sql import conversations
    from tokenrelay.history.sql_rows import ManyRows

    url, schema = database
    history = SQLHistory(url, schema=schema)
    await history.start()
    when = datetime(2026, 12, 2, 10, 11, 12, 345678, tzinfo=UTC)
    later = datetime(2026, 12, 3, 1, 2, 3, 4, tzinfo=UTC)

    def rows(prefix: str, at: datetime) -> list[dict[str, Any]]:
        return [
            {"user_id": "ann", "id": f"{prefix}{i}", "title": f"t{i} é", "created_at": when, "updated_at": at}
            for i in range(3)
        ]

    insert = (pg_insert if history.dialect == "postgresql" else sqlite_insert)(conversations)
    upsert = insert.on_conflict_do_update(
        index_elements=["user_id", "id"], set_={"updated_at": insert.excluded.updated_at}
    )
    many = ManyRows(upsert, ("user_id", "id", "title", "created_at", "updated_at"))
    try:
        async with history.engine.begin() as conn:
            await conn.run_sync(lambda c: many.execute(c, rows("m", when)))
            await conn.run_sync(lambda c: many.execute(c, rows("m", later)[:1]))  # asked in again: updated
            await conn.run_sync(lambda c: many.execute(c, []))
            await conn.execute(upsert, rows("s", when))
            await conn.execute(upsert, rows("s", later)[:1])
            cast = "CAST(created_at AS TEXT), CAST(updated_at AS TEXT)"
            stored = (await conn.execute(text(f"SELECT id, title, {cast} FROM conversations ORDER BY id"))).all()
        by_id = {row[0]: row[1:] for row in stored}
        assert len(by_id) == 6
        assert [by_id[f"m{i}"] for i in range(3)] == [by_id[f"s{i}"] for i in range(3)]
        assert by_id["m0"] != by_id["m1"]  # the upsert's update took the later time
        with pytest.raises(ValueError, match="not the columns"):
            async with history.engine.connect() as conn:
                await conn.run_sync(lambda c: ManyRows(upsert, ("user_id", "id")).execute(c, rows("x", when)))
    finally:
        await history.close()
