"""The order of a run's answers in the SQL history, whatever order their saves land in.

A run that pauses for approvals saves its answer so far (``waiting``, its last part a
:class:`~tokenrelay.messages.PausedPart` with the pause's event id); when it goes on, possibly on another instance,
what it says next takes that message's place. The saves of one run may land out of order: the instance that paused
may still be saving the answer so far when another one has resumed the run, finished it and saved its final answer.
So each of a run's answers has a rank — a waiting answer its pause's event id, a final answer above every pause —
and a save only ever replaces lower ranks: a late waiting answer is dropped when the run has a final answer or a
later pause saved already, instead of coming back after them.

The check runs in the write's own transaction, after the UPDATE that marks the conversation updated (every answer's
write makes one: :meth:`~tokenrelay.history.sql.SQLHistory._write`). That UPDATE holds the conversation's row until
the transaction ends, so two instances saving answers of one run take turns, and the second sees the first's rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.engine import Connection

from tokenrelay.history.base import StoredMessage
from tokenrelay.history.sql_reads import matching, stored
from tokenrelay.messages import PausedPart

__all__ = ["ordered_answers", "rank"]

_Key = tuple[str, str, str]
_COLUMNS = ("role", "content", "status", "run_id", "created_at", "error_code", "output_tokens", "parts", "encoding")


def rank(message: StoredMessage) -> float:
    """Where ``message`` stands among its run's answers: a waiting one at its pause's event id, a final one last."""
    if message.status != "waiting":
        return math.inf
    last = message.parts[-1] if message.parts else None
    return float(last.seq) if isinstance(last, PausedPart) else 0.0


def _key(row: dict[str, Any]) -> _Key:
    return (row["user_id"], row["conversation_id"], row["run_id"])


def ordered_answers(
    conn: Connection, table: Table, written: Sequence[tuple[dict[str, Any], StoredMessage]]
) -> list[dict[str, Any]]:
    """The rows of ``written`` (each with the message it stores) to insert, in order: a waiting answer outranked by
    one of its run's answers, stored or in the same batch, is left out. The stored waiting answers of the runs that
    get a row are deleted here (the new row takes their place)."""
    answers = [(row, message) for row, message in written if row["run_id"] is not None]
    if not answers:
        return [row for row, _ in written]
    m = table.c
    # Only a waiting answer can be outranked (a final one is always kept): the stored answers are read for the
    # runs with one in the batch, not for a batch of runs that simply finished.
    waiting = {_key(row) for row, message in answers if message.status == "waiting"}
    stored_rank: dict[_Key, float] = {}
    if waiting:
        found = conn.execute(
            select(m.user_id, m.conversation_id, *(m[name] for name in _COLUMNS)).where(
                matching((m.user_id, m.conversation_id, m.run_id), waiting, conn.dialect.name)
            )
        )
        for r in found.all():
            key = (r.user_id, r.conversation_id, r.run_id)
            stored_rank[key] = max(stored_rank.get(key, -math.inf), rank(stored(r)))
    best: dict[_Key, float] = {}
    for row, message in answers:
        best[_key(row)] = max(best.get(_key(row), -math.inf), rank(message))
    keep: list[dict[str, Any]] = []
    taken: set[_Key] = set()  # the runs whose waiting answer in this batch is kept (one each)
    for row, message in written:
        if row["run_id"] is not None and message.status == "waiting":
            key, its = _key(row), rank(message)
            if its < best[key] or its <= stored_rank.get(key, -math.inf) or key in taken:
                continue  # saved late: the run has gone on since this pause
            taken.add(key)
        keep.append(row)
    replacing = {_key(row) for row in keep if row["run_id"] is not None}
    if replacing:
        run = matching((m.user_id, m.conversation_id, m.run_id), replacing, conn.dialect.name)
        conn.execute(delete(table).where(run, m.status == "waiting"))
    return keep
