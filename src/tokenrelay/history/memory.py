from __future__ import annotations

from collections import OrderedDict

from tokenrelay.history.base import StoredMessage

__all__ = ["MemoryHistory"]


class MemoryHistory:
    """In-process history, bounded: the least recently used conversations are forgotten first."""

    def __init__(self, *, max_conversations: int = 10_000, max_messages: int = 200) -> None:
        self.max_conversations = max_conversations
        self.max_messages = max_messages
        self._conversations: OrderedDict[tuple[str, str], list[StoredMessage]] = OrderedDict()

    async def load(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        key = (user_id, conversation_id)
        messages = self._conversations.get(key)
        if messages is None:
            return []
        self._conversations.move_to_end(key)
        return list(messages)

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage) -> None:
        key = (user_id, conversation_id)
        messages = self._conversations.setdefault(key, [])
        self._conversations.move_to_end(key)
        messages.append(message)
        del messages[: -self.max_messages]
        while len(self._conversations) > self.max_conversations:
            self._conversations.popitem(last=False)

    async def close(self) -> None:
        return None
