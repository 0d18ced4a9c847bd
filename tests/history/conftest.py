"""The histories under test: in memory, a SQLite file, and a schema of its own in the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tokenrelay.history.base import History
from tokenrelay.history.memory import MemoryHistory

MAX_MESSAGES = 5  # small, so that a test can go over the bound


def _database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/h.db", None
    url, schema = request.getfixturevalue("postgres_schema")
    return url, schema


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(url, schema): a SQLite file, or a schema of its own in the real PostgreSQL."""
    return _database(request.param, request, tmp_path)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def history_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None] | None:
    """The database of the history under test (``None``: in memory)."""
    return None if request.param == "memory" else _database(request.param, request, tmp_path)


@pytest.fixture
async def history(history_database: tuple[str, str | None] | None) -> AsyncIterator[History]:
    """Every kind of history, each keeping at most ``MAX_MESSAGES`` messages of a conversation."""
    if history_database is None:
        store: History = MemoryHistory(max_messages=MAX_MESSAGES)
    else:
        from tokenrelay.history.sql import SQLHistory

        url, schema = history_database
        store = SQLHistory(url, schema=schema, max_messages=MAX_MESSAGES)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
