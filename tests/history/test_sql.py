"""The SQL history on SQLite and the real PostgreSQL: its rows, migrations, and the server's endpoints over it.

What every history does (order, scoping, bounds, listing, deleting) is checked in ``test_contract.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import inspect, text

from tests.conftest import running_server
from tests.history.helpers import msg
from tests.server.helpers import payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.history.sql import SQLHistory, normalize_url
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
        assert version == "0002"
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
                break  # the tab closes
        await asyncio.wait_for(relay.runs.wait(r.headers["x-run-id"]), 5)
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
