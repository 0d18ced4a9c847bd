"""The inbox: requests from other instances to the one that drives a run (stop it; its last viewer left).

``P inbox:<iid>`` is a list other instances push ``cancel <run>`` and ``idle <run>`` to; the owner pops it with
``BLPOP``. A list rather than pub/sub: a request sent while the owner was briefly disconnected waits for it instead
of being lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from tokenrelay.stores.base import StoreListener
from tokenrelay.stores.redis.cluster import UNREACHABLE, Client
from tokenrelay.stores.redis.layout import Keys, decode

__all__ = ["Inbox", "Request"]

logger = logging.getLogger("tokenrelay.stores.redis")

Request = Literal["cancel", "idle"]

_TTL_MS = 60_000  # an inbox whose owner is gone does not stay


class Inbox:
    """Sends requests to other instances' inboxes, and serves this instance's to its listener."""

    def __init__(self, client: Client, keys: Keys, instance_id: str, *, liveness_s: float, block_s: float) -> None:
        self.listener: StoreListener | None = None
        self._redis = client
        self._keys = keys
        self._key = keys.inbox(instance_id)
        # Seconds BLPOP blocks: under the client's socket timeout, which would otherwise cut every idle wait.
        self._block_s = max(0.1, min(float(max(1, round(liveness_s))), block_s))

    async def send(self, instance_id: str, request: Request, run_id: str) -> None:
        """Ask ``instance_id`` (the run's owner) to act on ``run_id``."""
        key = self._keys.inbox(instance_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, f"{request} {run_id}")
            pipe.pexpire(key, _TTL_MS)
            await pipe.execute()

    async def serve(self) -> None:
        """Hand this instance's requests to its listener as they come, for ever."""
        while True:
            try:
                item = await self._redis.blpop([self._key], timeout=self._block_s)
            except UNREACHABLE as exc:
                logger.warning("cannot read this instance's requests from Redis: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if item is None or self.listener is None:
                continue
            request, _, run_id = decode(item[1]).partition(" ")
            if request == "cancel":
                self.listener.cancel_requested(run_id)
            elif request == "idle":
                self.listener.viewers_gone(run_id)
