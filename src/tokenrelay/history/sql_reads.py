"""The SQL history's loads: the last messages of one conversation, or of many in one query (a burst of loads
batched by :class:`~tokenrelay.history.batch.ReadBatcher`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, select, tuple_
from sqlalchemy.engine import Connection

from tokenrelay.history.base import StoredMessage
from tokenrelay.history.codec import decode_parts, decode_text

__all__ = ["load_many", "matching", "stored", "timestamp"]

_COLUMNS = ("role", "content", "status", "run_id", "created_at", "error_code", "output_tokens", "parts", "encoding")


def matching(
    columns: Sequence[ColumnElement[Any]], keys: Collection[tuple[Any, ...]], dialect: str
) -> ColumnElement[bool]:
    """``columns`` equal to one of ``keys``, in the form the ``dialect``'s planner serves from an index.

    SQLite plans a row-value ``IN`` of more than one row, ``(a, b) IN (VALUES (?, ?), ...)``, as a scan of the whole
    table: each batch would read every stored row. There each column's own ``IN`` list comes first (the planner
    searches an index with the lists of its columns), and the row values after, to keep the match exact (the lists
    alone would also match a mix of two keys). PostgreSQL searches an index for each row of the row-value ``IN``;
    the lists would make its generic plan for the prepared statement (its sixth run on) a scan instead."""
    if len(keys) == 1:
        [key] = keys
        return and_(*(column == value for column, value in zip(columns, key, strict=True)))
    rows = tuple_(*columns).in_(sorted(keys))
    if dialect != "sqlite":
        return rows
    lists = (column.in_(sorted({key[i] for key in keys})) for i, column in enumerate(columns))
    return and_(*lists, rows)


def load_many(
    conn: Connection,
    table: Table,
    keys: Sequence[tuple[str, str]],
    limit: int,
) -> list[list[StoredMessage]]:
    """The last ``limit`` messages of each conversation ``keys`` (``(user_id, conversation_id)``), oldest first:
    one list per key, in the order of ``keys``. Synchronous: an async connection runs it through ``run_sync``."""
    m = table.c
    columns = [m[name] for name in _COLUMNS]
    if len(keys) == 1:
        [(user_id, conversation_id)] = keys
        query = (
            select(*columns)
            .where(m.user_id == user_id, m.conversation_id == conversation_id)
            .order_by(m.id.desc())
            .limit(limit)
        )
        return [[stored(row) for row in reversed(conn.execute(query).all())]]
    # Each conversation's window: the id of its ``limit``-th newest message (one search of the conversation's index,
    # ``limit`` entries walked backwards), then its rows from there on (one range of the same index). Ranking every
    # message with row_number() read long conversations whole. The conversations come from their own table (its
    # primary key, matched as everywhere else): SQLAlchemy compiles that once, a VALUES list of the keys every batch.
    talks = table.metadata.tables["conversations"]
    found_keys = matching((talks.c.user_id, talks.c.id), set(keys), conn.dialect.name)
    wanted = select(talks.c.user_id, talks.c.id.label("conversation_id")).where(found_keys).cte("wanted")
    older = table.alias("older")
    first = (
        select(older.c.id)
        .where(older.c.user_id == wanted.c.user_id, older.c.conversation_id == wanted.c.conversation_id)
        .order_by(older.c.id.desc())
        .limit(1)
        .offset(limit - 1)
        .scalar_subquery()
    )
    start = func.coalesce(first, 0).label("start_id")
    windows = select(wanted.c.user_id, wanted.c.conversation_id, start).cte("windows")
    inside = and_(
        m.user_id == windows.c.user_id, m.conversation_id == windows.c.conversation_id, m.id >= windows.c.start_id
    )
    query = select(m.user_id, m.conversation_id, *columns).join_from(windows, table, inside).order_by(m.id)
    found: dict[tuple[str, str], list[StoredMessage]] = {key: [] for key in keys}
    for row in conn.execute(query).all():
        found[(row.user_id, row.conversation_id)].append(stored(row))
    return [found[key] for key in keys]


def timestamp(value: datetime) -> float:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def stored(row: Any) -> StoredMessage:
    """A message row as the message it stores."""
    content = decode_text(row.content, row.encoding)
    return StoredMessage(
        role=row.role,
        content=content,
        status=row.status,
        run_id=row.run_id,
        created_at=timestamp(row.created_at),
        error_code=row.error_code,
        output_tokens=row.output_tokens,
        parts=decode_parts(row.parts, content),
    )
