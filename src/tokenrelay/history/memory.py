from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from tokenrelay.history.base import Conversation, StoredMessage, title_for

__all__ = ["MemoryHistory"]


@dataclass(slots=True)
class _Conversation:
    title: str
    created_at: float
    updated_at: float
    messages: list[StoredMessage] = field(default_factory=list)


class MemoryHistory:
    """In-process history, bounded: the least recently used conversations are forgotten first."""

    def __init__(self, *, max_conversations: int = 10_000, max_messages: int = 200) -> None:
        if max_messages < 1 or max_conversations < 1:
            raise ValueError(
                f"max_messages and max_conversations must be at least 1, not {max_messages} and {max_conversations}"
            )
        self.max_conversations = max_conversations
        self.max_messages = max_messages
        self._conversations: OrderedDict[tuple[str, str], _Conversation] = OrderedDict()

    async def check(self) -> None:
        return None  # nothing to reach

    async def start(self) -> None:
        return None

    async def load(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        key = (user_id, conversation_id)
        conversation = self._conversations.get(key)
        if conversation is None:
            return []
        self._conversations.move_to_end(key)
        return list(conversation.messages)

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage, *, create: bool = True) -> bool:
        key = (user_id, conversation_id)
        conversation = self._conversations.get(key)
        if conversation is None:
            if not create:
                return False
            title = title_for(message.content) if message.role == "user" else ""
            conversation = self._conversations[key] = _Conversation(title, message.created_at, message.created_at)
        self._conversations.move_to_end(key)
        conversation.updated_at = max(conversation.updated_at, message.created_at)
        if message.run_id is not None and message.role == "assistant":
            # A paused run's answer so far gives way to what the run says next.
            conversation.messages = [
                m for m in conversation.messages if m.run_id != message.run_id or m.status != "waiting"
            ]
        conversation.messages.append(message)
        del conversation.messages[: -self.max_messages]
        while len(self._conversations) > self.max_conversations:
            self._conversations.popitem(last=False)
        return True

    async def paused_answer(self, user_id: str, run_id: str) -> tuple[str, StoredMessage] | None:
        for (uid, cid), conversation in self._conversations.items():
            if uid == user_id:
                for m in reversed(conversation.messages):
                    if m.run_id == run_id and m.status == "waiting":
                        return cid, m
        return None

    async def conversations(self, user_id: str, *, limit: int = 50) -> list[Conversation]:
        mine = [
            Conversation(cid, c.title, c.created_at, c.updated_at)
            for (uid, cid), c in self._conversations.items()
            if uid == user_id
        ]
        mine.sort(key=lambda c: c.updated_at, reverse=True)
        return mine[:limit]

    async def delete(self, user_id: str, conversation_id: str) -> bool:
        return self._conversations.pop((user_id, conversation_id), None) is not None

    async def close(self) -> None:
        return None
