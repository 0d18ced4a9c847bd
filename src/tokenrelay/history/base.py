from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from tokenrelay.backends.base import Message, Role

__all__ = ["History", "MessageStatus", "StoredMessage"]

MessageStatus = Literal["complete", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: Role
    content: str
    status: MessageStatus = "complete"
    run_id: str | None = None
    created_at: float = 0.0

    def as_message(self) -> Message:
        return Message(self.role, self.content)


class History(Protocol):
    """Conversations, keyed by (user_id, conversation_id): a user only ever sees their own."""

    async def load(self, user_id: str, conversation_id: str) -> list[StoredMessage]: ...

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage) -> None: ...

    async def close(self) -> None: ...
