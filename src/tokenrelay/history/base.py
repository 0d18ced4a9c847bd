from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from tokenrelay.messages import Message, Role

__all__ = ["Conversation", "History", "MessageStatus", "StoredMessage", "title_for"]

MessageStatus = Literal["complete", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: Role
    content: str
    status: MessageStatus = "complete"
    run_id: str | None = None
    created_at: float = 0.0
    error_code: str | None = None
    """For a failed answer: the error's code (``model_error``, ``interrupted``...)."""
    output_tokens: int | None = None

    def as_message(self) -> Message:
        return Message(self.role, self.content)


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    title: str
    created_at: float
    updated_at: float


def title_for(text: str, limit: int = 80) -> str:
    """A conversation's title: the start of its first message, on one line."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class History(Protocol):
    """Conversations, keyed by (user_id, conversation_id): a user only ever sees their own.

    Conversation ids are chosen by clients, so they are scoped per user: two users' conversations with the same
    id are two conversations.
    """

    async def start(self) -> None:
        """Connect (and bring the schema up to date); called once before use."""
        ...

    async def load(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        """The conversation's messages, oldest first (the most recent ones, if the store keeps a bound)."""
        ...

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage) -> None:
        """Append a message, creating the conversation if it is new."""
        ...

    async def conversations(self, user_id: str, *, limit: int = 50) -> list[Conversation]:
        """The user's conversations, most recently updated first."""
        ...

    async def delete(self, user_id: str, conversation_id: str) -> bool:
        """Delete a conversation and its messages; ``False`` if the user has no such conversation."""
        ...

    async def close(self) -> None: ...
