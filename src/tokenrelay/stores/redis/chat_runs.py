"""useChat's chat → latest run index in Redis, so that a resume works on any instance.

The same :class:`~tokenrelay.stores.chat_runs.ChatRunIndex` as the in-memory one, on the Redis the run store uses.
"""

from __future__ import annotations

from tokenrelay.stores.redis.cluster import Client
from tokenrelay.stores.redis.layout import decode

__all__ = ["RedisChatRunIndex"]


class RedisChatRunIndex:
    """(user, chat) → the chat's latest run id, shared by every instance that uses the same Redis and ``prefix``.

    One string key per (user, chat), expiring ``ttl_s`` after it was set: give it the longest a run's keys can
    live (its running TTL plus its finished TTL), after which there is nothing to resume.
    """

    def __init__(self, client: Client, *, prefix: str, ttl_s: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)

    def _key(self, user_id: str, chat_id: str) -> str:
        # Lengths first, so that no pair of ids can collide with another once joined.
        return f"{self._prefix}chat:{len(user_id)}:{user_id}:{chat_id}"

    async def get(self, user_id: str, chat_id: str) -> str | None:
        raw = await self._redis.get(self._key(user_id, chat_id))
        return decode(raw) if raw is not None else None

    async def set(self, user_id: str, chat_id: str, run_id: str) -> None:
        await self._redis.set(self._key(user_id, chat_id), run_id, px=self._ttl_ms)
