"""Alembic environment: run against the connection ``SQLHistory.migrate`` hands over (no ini file needed).

To run by hand, with an ``alembic.ini`` that says ``[alembic]`` / ``script_location =
tokenrelay.history:migrations``: ``alembic -x url=sqlite:///tokenrelay.db upgrade head`` (or ``current``, ``history``).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text

from tokenrelay.history.sql import MIGRATION_LOCK_ID, metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # type: ignore[attr-defined]
            # Instances that start together must not migrate at once: the second waits, then finds nothing to do.
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))  # type: ignore[attr-defined]
        context.run_migrations()


async def _standalone(url: str) -> None:
    """``alembic upgrade`` from the command line: the same async drivers as the server."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from tokenrelay.history.sql import normalize_url

    engine = create_async_engine(normalize_url(url))
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=... upgrade head")
    asyncio.run(_standalone(url))
