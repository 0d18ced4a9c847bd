"""Writes that arrive together, committed together: the SQL history off the runs' hot path.

A burst of run starts (each stores its question) or of run ends (each stores its answer) would otherwise be one
transaction each, one after the other on SQLite's single writer. Here each write joins a queue; one writer task
takes everything queued, runs it in order in one transaction and commits once, then wakes each caller with its own
result. So:

- writes keep their order (one queue, one writer): a conversation's question is stored before its answer;
- a caller returns only once its write is committed (an answer is stored before the run's done frame is sent);
- a write that fails does not fail the others: when a batch's transaction fails, its writes are retried one
  transaction each, and only the one that fails again reports the error (when the database cannot be reached,
  every write of the batch reports that at once).

Reads arrive in bursts too (every follow-up question loads its conversation): :class:`ReadBatcher` answers the
loads waiting at the same moment with one query. A load waits for the writes of its conversation still queued
(:meth:`WriteBatcher.settled`), so a question written then read sees itself.

A :class:`Tracker` (the SQL history's :class:`~tokenrelay.history.recent.Recent`) runs each batch in a transaction
and follows what it commits, before the batch's callers are woken. The write itself is synchronous (it takes a
SQLAlchemy ``Connection``): on a SQLite file the tracker runs the whole transaction on its writing connection's own
thread, one trip for the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["MAX_BATCH", "UNREACHABLE", "ReadBatcher", "Tracker", "WriteBatcher"]

UNREACHABLE: Final = (OperationalError, InterfaceError, DisconnectionError, OSError, TimeoutError)
"""What a database says when it cannot be reached or written at all (down, cut, a read-only file, a full disk)."""

MAX_BATCH: Final = 500
"""The most writes one transaction takes: a huge burst is committed in several steps, so none waits for all."""

Item = TypeVar("Item")
Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


Write = Callable[[Connection, list[Item]], list[bool]]


class Tracker(Protocol[Item]):
    """What runs a :class:`WriteBatcher`'s transactions and follows their commits (``history.recent.Recent``)."""

    async def commit(self, write: Write[Item], items: list[Item]) -> list[bool]:
        """``write(conn, items)`` in one transaction, committed; its results."""
        ...


@dataclass(slots=True)
class _Write(Generic[Item]):
    item: Item
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class WriteBatcher(Generic[Item]):
    """Runs ``write(conn, items)`` (one result per item, in order) on the items :meth:`submit`-ted at the same
    time, in one transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        write: Write[Item],
        key: Callable[[Item], Hashable] | None = None,
        tracker: Tracker[Item] | None = None,
    ) -> None:
        self.engine = engine
        self.write = write
        self.key = key
        self.tracker = tracker
        self._queue: list[_Write[Item]] = []
        self._writer: asyncio.Task[None] | None = None
        # The last write not yet done of each key (with ``key``): the writes are done in order, so once it is done
        # every earlier write of that key is too.
        self._last: dict[Hashable, asyncio.Future[bool]] = {}

    async def settled(self, key: Hashable) -> None:
        """Return once the writes of ``key`` submitted so far are done (committed or failed)."""
        last = self._last.get(key)
        if last is not None:
            await asyncio.wait([last])

    def _track(self, write: _Write[Item]) -> None:
        if self.key is None:
            return
        key = self.key(write.item)
        self._last[key] = write.done

        def forget(done: asyncio.Future[bool]) -> None:
            if self._last.get(key) is done:
                del self._last[key]

        write.done.add_done_callback(forget)

    async def submit(self, item: Item) -> bool:
        """Write ``item`` (with whatever else is waiting); its result once committed."""
        write = _Write(item)
        # A caller that was cancelled no longer reads the result: retrieve it here, so a failure is not logged as
        # an exception nobody retrieved (the caller that stayed got it).
        write.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append(write)
        self._track(write)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="tokenrelay-history-writer")
        # The write goes on even if this caller is cancelled: it may already be in the open transaction.
        return await asyncio.shield(write.done)

    async def close(self) -> None:
        """Let the writes already queued finish."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                results = await self._together(batch)
            except UNREACHABLE as exc:
                _fail(batch, exc)  # the database is not there: trying each write again would only wait longer
            except Exception:
                await self._one_by_one(batch)  # a batch refused: find which write it was
            else:
                for write, result in zip(batch, results, strict=True):
                    if not write.done.done():
                        write.done.set_result(result)

    async def _together(self, batch: list[_Write[Item]]) -> list[bool]:
        items = [w.item for w in batch]
        if self.tracker is not None:
            return await self.tracker.commit(self.write, items)
        async with self.engine.begin() as conn:
            return await conn.run_sync(self.write, items)

    async def _one_by_one(self, batch: list[_Write[Item]]) -> None:
        for write in batch:
            try:
                [result] = await self._together([write])
            except Exception as exc:
                if not write.done.done():
                    write.done.set_exception(exc)
            else:
                if not write.done.done():
                    write.done.set_result(result)


def _fail(batch: list[_Write[Item]], exc: BaseException) -> None:
    for write in batch:
        if not write.done.done():
            write.done.set_exception(exc)


class ReadBatcher(Generic[Key, Value]):
    """Runs ``read(conn, keys)`` (one value per key, in order) once for the keys :meth:`load`-ed at the same time.

    One reader: while its query runs, the loads that arrive wait together for the next one. Loads of the same key
    waiting together share one answer; a load that arrives once its key's query has begun waits for the next
    query (it may have been asked after a write the running query does not see).
    """

    def __init__(
        self, engine: AsyncEngine, read: Callable[[AsyncConnection, Sequence[Key]], Awaitable[Sequence[Value]]]
    ) -> None:
        self.engine = engine
        self.read = read
        self._waiting: dict[Key, asyncio.Future[Value]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def load(self, key: Key) -> Value:
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # see WriteBatcher.submit
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._drain(), name="tokenrelay-history-reader")
        # Shared by the loads of this key: one caller cancelled must not cancel the others' answer.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[:MAX_BATCH]
            batch = [(key, self._waiting.pop(key)) for key in keys]
            try:
                async with self.engine.connect() as conn:
                    values = await self.read(conn, keys)
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), value in zip(batch, values, strict=True):
                    future.set_result(value)
