"""History in SQL: SQLite by default (one file, nothing to run), PostgreSQL when instances share it.

SQLAlchemy 2 async (aiosqlite / asyncpg), Core tables rather than the ORM: every query here is one statement.
The schema is managed by Alembic; the migrations ship inside the package (``history/migrations``) and
``start()`` applies the missing ones, so upgrading tokenrelay keeps existing conversations. On PostgreSQL the
upgrade holds an advisory lock, so instances starting together do not race to migrate.

Schema (``messages.user_id`` repeats the owner so that every query filters on the user, never on an id alone):

- ``conversations(user_id, id, title, created_at, updated_at)``, primary key ``(user_id, id)``: conversation ids
  are chosen by clients, so they are scoped per user.
- ``messages(id, user_id, conversation_id, role, content, status, run_id, error_code, output_tokens,
  created_at, parts, encoding)``; ``status`` is ``complete``, ``cancelled`` (partial text) or ``failed`` (partial
  text, with ``error_code``); ``parts`` is the message's parts as JSON and ``encoding`` marks a content stored
  encoded because no database could hold it as text (the encoding: :mod:`tokenrelay.history.codec`). Deleting a
  conversation deletes its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator, Sequence
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

try:
    from sqlalchemy import (
        BigInteger,
        Column,
        DateTime,
        ForeignKeyConstraint,
        Index,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        delete,
        event,
        select,
        text,
        update,
    )
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    from sqlalchemy.engine import Connection, make_url
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    # A dependency of tokenrelay itself, not an extra: the installation is incomplete.
    raise ImportError(f"the SQL history needs SQLAlchemy ({exc}): pip install --force-reinstall tokenrelay") from exc

from tokenrelay._extras import missing_extra
from tokenrelay.errors import StoreUnavailable
from tokenrelay.history.base import Conversation, StoredMessage, title_for
from tokenrelay.history.batch import UNREACHABLE, ReadBatcher, WriteBatcher
from tokenrelay.history.codec import storable
from tokenrelay.history.recent import Recent
from tokenrelay.history.sql_order import ordered_answers
from tokenrelay.history.sql_reads import load_many, matching
from tokenrelay.history.sql_reads import stored as _stored
from tokenrelay.history.sql_reads import timestamp as _ts
from tokenrelay.history.sql_rows import MESSAGE_KEYS, Add, ManyRows, message_row, when_of

__all__ = ["SQLHistory", "conversations", "messages", "metadata", "normalize_url"]

metadata = MetaData()

conversations = Table(
    "conversations",
    metadata,
    Column("user_id", String(256), primary_key=True),
    Column("id", String(256), primary_key=True),
    Column("title", String(200), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_conversations_user_updated", "user_id", "updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("user_id", String(256), nullable=False),
    Column("conversation_id", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(16), nullable=False, default="complete"),
    Column("run_id", String(64), nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("parts", Text, nullable=True),
    Column("encoding", String(16), nullable=True),
    ForeignKeyConstraint(
        ["user_id", "conversation_id"],
        ["conversations.user_id", "conversations.id"],
        ondelete="CASCADE",
        name="fk_messages_conversation",
    ),
    Index("ix_messages_conversation", "user_id", "conversation_id", "id"),
    Index("ix_messages_user_run", "user_id", "run_id"),
)

_MIGRATIONS = "tokenrelay.history:migrations"
# A fixed key for pg_advisory_xact_lock: one migration at a time per database.
MIGRATION_LOCK_ID = 0x746F6B72


def normalize_url(url: str) -> str:
    """Accept the plain forms people write (``sqlite:///x.db``, ``postgresql://...``) and pick the async driver."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    name = driver.get(parsed.drivername)
    return parsed.set(drivername=name).render_as_string(hide_password=False) if name else url


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _engine(url: str, connect_args: dict[str, Any]) -> AsyncEngine:
    try:
        return create_async_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except ImportError as exc:  # SQLAlchemy imports the URL's driver here
        if exc.name == "asyncpg":
            raise missing_extra("a postgresql:// history (--database-url)", "asyncpg", "postgres", cause=exc) from None
        raise


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """A database that cannot be reached (or written: a read-only file, a full disk) is unavailable, for the
    server to answer 503 and retry later; any other error stays what it is."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StoreUnavailable(f"the history database is unavailable: {type(exc).__name__}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite: needed for ON DELETE CASCADE
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    # In WAL mode NORMAL syncs at checkpoints, not at each commit: a commit can be lost to a power cut (never to a
    # crash of the process), and the file is never corrupted. A commit per saved answer then costs no fsync.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def run_migrations(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database on ``connection`` to ``revision`` (synchronous: call it through ``run_sync``)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


class SQLHistory:
    """Conversations and messages in a SQL database, through SQLAlchemy's async engine.

    ``url`` is any SQLAlchemy URL: ``sqlite+aiosqlite:///tokenrelay.db`` (a file, relative to the current
    directory; its folder is created), ``postgresql+asyncpg://user@host/db``. ``schema`` (PostgreSQL) puts the
    tables in that schema, which must exist. ``migrate=False`` leaves the schema to you (``alembic upgrade``).
    """

    def __init__(
        self,
        url: str = "sqlite+aiosqlite:///tokenrelay.db",
        *,
        max_messages: int = 200,
        schema: str | None = None,
        migrate: bool = True,
        engine: AsyncEngine | None = None,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        self.url = normalize_url(url)
        self.max_messages = max_messages
        self.migrate_on_start = migrate
        connect_args: dict[str, Any] = {}
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if schema is not None:
            if self.dialect != "postgresql":
                raise ValueError("a history schema needs PostgreSQL")
            connect_args["server_settings"] = {"search_path": schema}
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = engine or _engine(self.url, connect_args)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        # What a follow-up reads, and the writing connection (SQLite file only).
        self._recent = Recent(self.engine, messages, max_messages, on_connect=_sqlite_pragmas)
        self._writes: WriteBatcher[Add] = WriteBatcher(
            self.engine, self._write, key=attrgetter("user_id", "conversation_id"), tracker=self._recent
        )
        self._reads: ReadBatcher[tuple[str, str], list[StoredMessage]] = ReadBatcher(self.engine, self._read)
        upsert = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(conversations)
        # Every row of a batch has the same updated_at: a conversation asked in again takes it.
        refresh = upsert.on_conflict_do_update(
            index_elements=["user_id", "id"], set_={"updated_at": upsert.excluded.updated_at}
        )
        self._new_conversations = ManyRows(refresh, ("user_id", "id", "title", "created_at", "updated_at"))
        self._new_messages = ManyRows(messages.insert(), MESSAGE_KEYS)
        self._write_failed = False  # the last write found the database unwritable: check() then tries a write

    async def check(self) -> None:
        try:
            async with asyncio.timeout(2.0), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                if self._write_failed and self.dialect == "sqlite":
                    # A SQLite file that answers reads may still refuse writes (a full disk, a read-only file):
                    # rewriting the header's user_version with its own value is the smallest real write.
                    version = int((await conn.execute(text("PRAGMA user_version"))).scalar_one())
                    await conn.execute(text(f"PRAGMA user_version = {version}"))
        except Exception as exc:
            raise StoreUnavailable(f"the history database is unreachable: {type(exc).__name__}") from exc
        self._write_failed = False

    async def start(self) -> None:
        if self.migrate_on_start:
            await self.migrate()
        await self._recent.start()

    async def migrate(self, revision: str = "head") -> None:
        # Alembic keeps its context in module globals, so one process migrates one database at a time; across
        # processes, PostgreSQL's advisory lock (env.py) does the same.
        async with _migration_lock(), self.engine.connect() as conn:
            await conn.run_sync(run_migrations, revision)
            await conn.commit()

    async def close(self) -> None:
        await self._writes.close()
        await self._recent.close()
        await self.engine.dispose()

    async def load(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        key = (user_id, conversation_id)  # after its writes already submitted, with the loads of the moment
        await self._writes.settled(key)
        with _reachable():  # (kept by this process and no one else wrote since: no read)
            return await self._recent.get(key) or await self._reads.load(key)

    async def _read(self, conn: AsyncConnection, keys: Sequence[tuple[str, str]]) -> list[list[StoredMessage]]:
        return await conn.run_sync(load_many, messages, keys, self.max_messages)

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage, *, create: bool = True) -> bool:
        # Batched with the writes waiting at the same moment (history.batch): one commit for a burst of runs.
        try:
            with _reachable():
                written = await self._writes.submit(Add(user_id, conversation_id, message, create))
        except StoreUnavailable:
            self._write_failed = True
            raise
        self._write_failed = False
        return written

    def _write(self, conn: Connection, adds: list[Add]) -> list[bool]:
        """The writes of one batch in three statements: the conversations asked in, the conversations answered
        in that still exist, the messages. Whether each message was written. Synchronous: on a SQLite file it runs
        on the writing connection's own thread (``history.recent``), elsewhere through ``run_sync``."""
        when = when_of(max(a.message.created_at for a in adds))
        created = {(a.user_id, a.conversation_id): a for a in reversed(adds) if a.create}  # the first of each
        if created:
            rows = [
                {
                    "user_id": a.user_id,
                    "id": a.conversation_id,
                    "title": storable(title_for(a.message.content)) if a.message.role == "user" else "",
                    "created_at": when_of(a.message.created_at),
                    "updated_at": when,
                }
                for a in created.values()
            ]
            self._new_conversations.execute(conn, rows)
        present = set(created) | self._touch(conn, {(a.user_id, a.conversation_id) for a in adds} - set(created), when)
        written = [(a.user_id, a.conversation_id) in present for a in adds]
        # A paused run's answer so far gives way to what the run says next, never the other way round (sql_order).
        rows = ordered_answers(
            conn, messages, [(message_row(a), a.message) for a, ok in zip(adds, written, strict=True) if ok]
        )
        self._new_messages.execute(conn, rows)
        return written

    def _touch(self, conn: Connection, keys: set[tuple[str, str]], when: datetime) -> set[tuple[str, str]]:
        """Mark the conversations ``keys`` updated; those that exist. The UPDATE locks their rows until the
        transaction ends, so a delete either comes first (the answer is not written) or after (and removes it)."""
        if not keys:
            return set()
        c = conversations.c
        touched = conn.execute(
            update(conversations)
            .where(matching((c.user_id, c.id), keys, self.dialect))
            .values(updated_at=when)
            .returning(c.user_id, c.id)
        )
        return {(row.user_id, row.id) for row in touched}

    async def paused_answer(self, user_id: str, run_id: str) -> tuple[str, StoredMessage] | None:
        m = messages.c
        query = (
            select(
                m.conversation_id,
                m.role,
                m.content,
                m.status,
                m.run_id,
                m.created_at,
                m.error_code,
                m.output_tokens,
                m.parts,
                m.encoding,
            )
            .where(m.user_id == user_id, m.run_id == run_id, m.status == "waiting")
            .order_by(m.id.desc())
            .limit(1)
        )
        with _reachable():
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return (row.conversation_id, _stored(row)) if row is not None else None

    async def conversations(self, user_id: str, *, limit: int = 50) -> list[Conversation]:
        c = conversations.c
        query = (
            select(c.id, c.title, c.created_at, c.updated_at)
            .where(c.user_id == user_id)
            .order_by(c.updated_at.desc(), c.id)
            .limit(limit)
        )
        with _reachable():
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [Conversation(row.id, row.title, _ts(row.created_at), _ts(row.updated_at)) for row in rows]

    async def delete(self, user_id: str, conversation_id: str) -> bool:
        with _reachable():
            return await self._delete(user_id, conversation_id)

    async def _delete(self, user_id: str, conversation_id: str) -> bool:
        return await self._recent.delete((user_id, conversation_id), _delete)


def _delete(conn: Connection, key: tuple[str, str]) -> bool:
    user_id, conversation_id = key
    # The foreign key cascades; deleting the messages first as well keeps that true on a database whose foreign keys
    # are off (a SQLite file opened by another tool, for instance).
    conn.execute(delete(messages).where(messages.c.user_id == user_id, messages.c.conversation_id == conversation_id))
    result = conn.execute(
        delete(conversations).where(conversations.c.user_id == user_id, conversations.c.id == conversation_id)
    )
    return bool(result.rowcount)
