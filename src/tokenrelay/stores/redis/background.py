"""Stopping the store's background tasks (the flusher, liveness, the inbox, the tail readers)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

__all__ = ["stop"]

_RECANCEL_S = 0.05


async def stop(tasks: Collection[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and return once every one has ended.

    A task still running ``_RECANCEL_S`` after it was cancelled is cancelled again: the Redis client can lose a
    cancellation that lands while it sets a connection up, and the task's loop would then go on for ever.
    """
    pending: set[asyncio.Task[None]] = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a task that failed has logged why, and the store is closing anyway
