"""Which run is a chat's latest: how ``GET /api/chat/{id}/stream`` (useChat's ``resume``) finds the run to follow."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

__all__ = ["ChatRunIndex", "MemoryChatRunIndex"]


class ChatRunIndex(Protocol):
    """(user id, chat id) → the id of the run last started for that chat. Async so a shared store can back it."""

    async def get(self, user_id: str, chat_id: str) -> str | None: ...

    async def set(self, user_id: str, chat_id: str, run_id: str) -> None: ...


class MemoryChatRunIndex:
    """In-process and bounded: the least recently used chats are forgotten first (their runs have long expired)."""

    def __init__(self, *, max_chats: int = 10_000) -> None:
        self.max_chats = max_chats
        self._runs: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def get(self, user_id: str, chat_id: str) -> str | None:
        return self._runs.get((user_id, chat_id))

    async def set(self, user_id: str, chat_id: str, run_id: str) -> None:
        key = (user_id, chat_id)
        self._runs[key] = run_id
        self._runs.move_to_end(key)
        while len(self._runs) > self.max_chats:
            self._runs.popitem(last=False)

    def __len__(self) -> int:
        return len(self._runs)
