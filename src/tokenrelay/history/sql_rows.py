"""The rows the SQL history inserts, and an INSERT of many rows compiled once, its rows handed to the driver as
tuples.

SQLAlchemy's ``conn.execute(insert, rows)`` works out each row's parameters anew (a dictionary of every bind,
matched against the statement's cache key) before the driver's ``executemany``: ~15 µs a row, where sqlite3 itself
takes ~4. On a SQLite file the history's writes run on a thread of their own that shares the interpreter with the
event loop, so that work is taken from the streams: in a burst of run starts it was a third of the writer's
samples. Here the statement is compiled once for the connection's dialect, with the columns the rows give, and
each row becomes a tuple of its values in the statement's order, through the columns' own bind processors (a
datetime becomes SQLite's text form, as SQLAlchemy stores it; asyncpg takes it as is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import Insert

from tokenrelay.history.base import MessageStatus, StoredMessage
from tokenrelay.history.codec import encode_parts, encode_text

__all__ = ["MESSAGE_KEYS", "Add", "ManyRows", "message_row", "when_of"]


def when_of(ts: float) -> datetime:
    """A stored time (unix seconds) as the datetime its column takes."""
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True)
class Add:
    """A message to store in a conversation (``create``: the conversation is made if it is not there)."""

    user_id: str
    conversation_id: str
    message: StoredMessage
    create: bool


MESSAGE_KEYS = (
    "user_id",
    "conversation_id",
    "role",
    "content",
    "encoding",
    "parts",
    "status",
    "run_id",
    "error_code",
    "output_tokens",
    "created_at",
)


def message_row(add: Add) -> dict[str, Any]:
    """The ``messages`` row of ``add``: its text encoded where a database could not hold it, its parts as JSON."""
    message = add.message
    content, encoding = encode_text(message.content)
    status: MessageStatus = message.status
    return {
        "user_id": add.user_id,
        "conversation_id": add.conversation_id,
        "role": message.role,
        "content": content,
        "encoding": encoding,
        "parts": encode_parts(message.parts, message.content),
        "status": status,
        "run_id": message.run_id,
        "error_code": message.error_code,
        "output_tokens": message.output_tokens,
        "created_at": when_of(message.created_at),
    }


class ManyRows:
    """``statement`` (an INSERT, maybe with an ``ON CONFLICT``) over the columns ``keys``, for rows given as
    mappings of those keys. Compiled on first use for each dialect."""

    def __init__(self, statement: Insert, keys: Sequence[str]) -> None:
        self.statement = statement
        self.keys = tuple(keys)
        self._compiled: dict[str, tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]] = {}

    def _compile(self, dialect: Dialect) -> tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
        compiled = self.statement.compile(dialect=dialect, column_keys=list(self.keys))
        order = tuple(compiled.positiontup or ())
        if not compiled.positional or sorted(order) != sorted(self.keys):
            raise ValueError(f"{dialect.name}: the statement's parameters {order} are not the columns {self.keys}")
        binds = compiled.binds
        convert = tuple(binds[key].type.dialect_impl(dialect).bind_processor(dialect) for key in order)
        return compiled.string, order, convert

    def execute(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        sql, order, convert = compiled
        pick = itemgetter(*order)  # a row's values in the statement's order, in one call
        values: list[tuple[Any, ...]] = [pick(row) for row in rows] if len(order) > 1 else [(pick(r),) for r in rows]
        if not values:
            return
        for i, f in enumerate(convert):
            if f is not None:  # only the columns whose type converts (on SQLite, the datetimes)
                values = [(*v[:i], f(v[i]), *v[i + 1 :]) for v in values]
        conn.exec_driver_sql(sql, values)
