"""The conversations a SQLite history wrote lately, kept in the process: a follow-up starts without reading.

Every write of the history commits on one connection of its own — SQLAlchemy's synchronous ``pysqlite``, on a thread
of its own, so that a batch's whole transaction is one trip to that thread (through the async driver each statement
would be three, and its SQLAlchemy work on the event loop) — and each batch of writes brings the entries of
its conversations up to date in its own transaction, while it holds SQLite's write lock, so that nothing else can
commit in between: a question or a final answer is appended to the entry (its run's waiting answer, if any, taken
away, as the write does); for anything else (a conversation not kept yet, a waiting answer, an entry at the bound
whose window the write may shift) the batch reads the conversation back, in the same transaction — except for a
conversation not kept that only gets questions: its first answer's write reads it (so a new conversation's question,
written while its run starts, costs the first token nothing more), and for a batch of more than
:data:`MAX_READ_BACK` such conversations (a burst: they are read on their next load, batched). The entries
are put in place once the transaction has committed, before the writes' callers are woken: a follow-up sent
after an answer's done frame finds the answer.

An entry is served only while nobody else has written: ``PRAGMA data_version`` on the writing connection changes
when any other connection commits (another process, another worker, a tool, this process's other connections),
never for its own commits. Each hit asks it (one trip to the connection's thread, no lock taken: WAL readers do
not wait); a change forgets every entry. While a write is going on, or after a write failed, a load reads the
database as before. A delete goes through the same connection and forgets its conversation once committed.

Bounded: the least recently used entries go first once their estimated size passes ``max_bytes``. PostgreSQL (and
SQLite in memory, a database of one connection) keeps nothing: instances sharing a database each write it, and
asking whether another did would cost the read it saves.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from tokenrelay.history.base import StoredMessage
from tokenrelay.history.codec import decode_parts, encode_parts
from tokenrelay.history.sql_reads import load_many

__all__ = ["MAX_BYTES", "Recent", "Written"]

MAX_BYTES: Final = 32 * 2**20
"""The default bound of the kept conversations' estimated size."""

MAX_READ_BACK: Final = 32
"""The most conversations a write batch reads back: a burst's writes go on at their own pace, and the
conversations they do not keep are read on their next load (many loads of the moment, one query)."""

_Key = tuple[str, str]
T = TypeVar("T")
W = TypeVar("W", bound="Written")


class Written(Protocol):
    """A message a write batch stores (``history.sql_rows.Add``)."""

    @property
    def user_id(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def message(self) -> StoredMessage: ...


def _part_size(part: object) -> int:
    values = (getattr(part, name) for name in getattr(part, "__slots__", ()))
    return 96 + sum(len(v) if isinstance(v, str) else len(repr(v)) for v in values)


def size(messages: Sequence[StoredMessage]) -> int:
    """An estimate of what ``messages`` take in memory (bytes)."""
    return sum(200 + len(m.content) + sum(_part_size(p) for p in m.parts) for m in messages)


def as_read(message: StoredMessage) -> StoredMessage:
    """``message`` as a read gives it back: its time to the microsecond, its parts as stored."""
    when = datetime.fromtimestamp(message.created_at, UTC).timestamp()
    return replace(
        message, created_at=when, parts=decode_parts(encode_parts(message.parts, message.content), message.content)
    )


def _by_conversation(
    items: Sequence[Written], results: Sequence[bool]
) -> tuple[dict[_Key, list[StoredMessage]], set[_Key]]:
    """The messages a batch wrote, by conversation; the conversations it found gone (deleted by someone)."""
    added: dict[_Key, list[StoredMessage]] = {}
    gone: set[_Key] = set()
    for item, written in zip(items, results, strict=True):
        key = (item.user_id, item.conversation_id)
        if written:
            added.setdefault(key, []).append(item.message)
        else:
            gone.add(key)
    return added, gone


def _appended(old: list[StoredMessage], new: list[StoredMessage], limit: int) -> list[StoredMessage] | None:
    """``old`` (the conversation's last ``limit`` messages) once ``new`` (questions and final answers) are written;
    ``None`` when that cannot be told from ``old`` alone."""
    if any(m.status == "waiting" for m in new):
        return None  # which of a run's answers stays is the write's to decide (history.sql_order)
    runs = {m.run_id for m in new if m.run_id is not None}
    kept = [m for m in old if not (m.run_id in runs and m.status == "waiting")]
    truncated = len(old) >= limit  # older messages may be stored that ``old`` does not hold
    if truncated and ({m.run_id for m in old if m.status == "waiting"} & runs) != runs:
        return None  # a waiting answer of these runs may be stored outside ``old``: the write deletes it
    after = kept + [as_read(m) for m in new]
    if truncated and len(after) < limit:
        return None  # the window now reaches messages ``old`` does not hold
    return after[-limit:]


class _Writer:
    """The writing connection of a SQLite file: a connection of its own (SQLAlchemy's synchronous ``pysqlite``), on a
    thread of its own. A whole transaction is one trip to that thread; through the async engine, each statement is
    three trips (a cursor, the statement, its close) and the commit a fourth."""

    def __init__(self, engine: AsyncEngine, on_connect: Callable[[Any, Any], None] | None) -> None:
        self.engine: Engine = create_engine(engine.url.set(drivername="sqlite"), poolclass=NullPool)
        if on_connect is not None:
            event.listen(self.engine, "connect", on_connect)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tokenrelay-history-writer")
        self.conn: Connection | None = None  # opened, used and closed on the thread only

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the writing connection, on its thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(self._call, fn, *args))

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.conn is None:
            self.conn = self.engine.connect()
        return fn(self.conn, *args)

    async def close(self) -> None:
        def close(conn: Connection) -> None:
            conn.close()
            self.conn = None

        try:
            if self.conn is not None:
                await self.call(close)
        finally:
            self._thread.shutdown(wait=False)
            self.engine.dispose()


def _in_transaction(conn: Connection, fn: Callable[..., T], *args: Any) -> T:
    with conn.begin():
        return fn(conn, *args)


def _data_version(conn: Connection) -> int:
    # On the DB-API connection itself: a statement through SQLAlchemy would begin a transaction and leave it open.
    return int(conn.connection.driver_connection.execute("PRAGMA data_version").fetchone()[0])  # type: ignore[union-attr]


class Recent:
    """The kept conversations of one SQL history (see the module), and its writes' transactions: on the writing
    connection when ``enabled`` (a SQLite file only), else on the engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        max_messages: int,
        *,
        max_bytes: int = MAX_BYTES,
        on_connect: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.on_connect = on_connect  # what the writing connection is set up with (the history's pragmas)
        database = engine.url.database
        self.enabled = engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self._entries: OrderedDict[_Key, tuple[list[StoredMessage], int]] = OrderedDict()
        self.bytes = 0
        self._writer: _Writer | None = None
        self._writing = 0  # transactions on the writing connection going on
        self._version: int | None = None  # data_version when the entries were last known current; None: unknown
        self._generation = 0  # counts the times every entry was forgotten

    @property
    def writer_engine(self) -> Engine | None:
        """The engine of the writing connection (``None``: the writes go through the history's engine)."""
        return self._writer.engine if self._writer is not None else None

    async def start(self) -> None:
        if self.enabled and self._writer is None:
            self._writer = _Writer(self.engine, self.on_connect)
            await self._rebase()

    async def close(self) -> None:
        self._forget_all()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()

    def __contains__(self, key: _Key) -> bool:
        return key in self._entries

    async def get(self, key: _Key) -> list[StoredMessage] | None:
        """The conversation's messages, when kept and current; ``None``: read the database."""
        if self._writer is None or self._writing:
            return None
        if self._version is None:
            await self._rebase()
            return None
        if key not in self._entries:
            return None
        try:
            version = await self._data_version()
        except Exception:
            self._lost()
            return None
        if version != self._version:
            self._forget_all()  # another connection committed: which conversations it changed is not known
            self._version = version
            return None
        entry = self._entries.get(key)  # (a write that committed meanwhile may have replaced it)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return list(entry[0])

    async def commit(self, write: Callable[[Connection, list[W]], list[bool]], items: list[W]) -> list[bool]:
        """``write(conn, items)`` in one transaction; once committed, the entries of its conversations as the
        transaction left them are put in place (before the writes' callers are woken)."""
        generation, keep = self._generation, self._version is not None  # (never kept without the writer)
        kept = {key: self._entries.get(key) for key in {(i.user_id, i.conversation_id) for i in items}} if keep else {}
        results, entries, gone = await self._in_writes(self._written, write, items, kept, keep)
        if keep and self._generation == generation and self._version is not None:
            for key in gone:
                self._drop(key)
            for key, messages in entries.items():
                self._put(key, messages)
        return results

    def _written(
        self,
        conn: Connection,
        write: Callable[[Connection, list[W]], list[bool]],
        items: list[W],
        kept: dict[_Key, tuple[list[StoredMessage], int] | None],
        keep: bool,
    ) -> tuple[list[bool], dict[_Key, list[StoredMessage]], set[_Key]]:
        """In the write's transaction (on the writing connection's thread): the write, then the entries of its
        conversations as they will be once committed (from ``kept``, the entries as they were before it), and those
        found gone."""
        results = write(conn, items)
        if not keep:
            return results, {}, set()
        added, gone = _by_conversation(items, results)
        entries: dict[_Key, list[StoredMessage]] = {}
        unknown: list[_Key] = []
        for key, new in added.items():
            old = kept.get(key)
            after = _appended(old[0], new, self.max_messages) if old is not None else None
            if after is not None:
                entries[key] = after
            elif old is not None or any(m.role != "user" for m in new):
                unknown.append(key)  # (not kept and only asked in: read back with its first answer)
        read = self._read_back(conn, unknown)
        entries.update(read)
        gone.update(key for key in unknown if key not in read)
        return results, entries, gone

    async def delete(self, key: _Key, delete: Callable[[Connection, _Key], bool]) -> bool:
        """``delete(conn, key)`` in a transaction of the writes; the conversation's entry is forgotten once it has
        committed."""
        deleted: bool = await self._in_writes(delete, key)
        self._drop(key)
        return deleted

    async def _in_writes(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in a transaction of the writes: on the writing connection when kept (while it runs,
        loads read the database), else on the engine."""
        if self._writer is None:
            async with self.engine.begin() as conn:
                done: T = await conn.run_sync(fn, *args)
                return done
        self._writing += 1
        try:
            return await self._writer.call(_in_transaction, fn, *args)
        except BaseException:
            self._lost()  # rolled back, or not known to have committed
            raise
        finally:
            self._writing -= 1

    def _read_back(self, conn: Connection, keys: list[_Key]) -> dict[_Key, list[StoredMessage]]:
        """The conversations ``keys`` as the transaction leaves them; none when there are too many (a burst: they
        are read on their next load, together, as before) or the read fails (the write still goes on)."""
        if not keys or len(keys) > MAX_READ_BACK:
            return {}
        try:
            read = load_many(conn, self.table, keys, self.max_messages)
        except Exception:
            return {}
        return dict(zip(keys, read, strict=True))

    def _put(self, key: _Key, messages: list[StoredMessage]) -> None:
        self._drop(key)
        cost = size(messages)
        if not messages or cost > self.max_bytes:
            return
        self._entries[key] = (messages, cost)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def _drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]

    def _forget_all(self) -> None:
        self._entries.clear()
        self.bytes = 0
        self._generation += 1

    def _lost(self) -> None:
        """Nothing kept can be trusted: forget it all until the writing connection's version is read again."""
        self._forget_all()
        self._version = None

    async def _rebase(self) -> None:
        try:
            version = await self._data_version()
        except Exception:
            self._lost()
            return
        self._forget_all()
        self._version = version

    async def _data_version(self) -> int:
        assert self._writer is not None
        return await self._writer.call(_data_version)
