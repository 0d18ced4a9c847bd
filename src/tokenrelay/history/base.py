from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from tokenrelay.messages import Message, Part, Role

__all__ = ["Conversation", "History", "MessageStatus", "StoredMessage", "title_for"]

MessageStatus = Literal["complete", "cancelled", "failed", "waiting"]
"""``waiting``: the answer so far of a run paused for approvals (its last part a ``PausedPart``); the run's next
answer takes its place."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the history keeps it: the :class:`~tokenrelay.messages.Message` and how its answer ended.

    ``content`` is any ``str`` (NUL, lone surrogates included): every history gives it back character for
    character.
    """

    role: Role
    content: str
    status: MessageStatus = "complete"
    run_id: str | None = None
    created_at: float = 0.0
    error_code: str | None = None
    """For a failed answer: the error's code (``model_error``, ``interrupted``...)."""
    output_tokens: int | None = None
    parts: tuple[Part, ...] = ()
    """What the message was made of, in order (see :mod:`tokenrelay.messages`); empty: it is its text alone."""

    def as_message(self) -> Message:
        return Message(self.role, self.content, self.parts)


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

    async def check(self) -> None:
        """Return when the history answers; raise :class:`~tokenrelay.errors.StoreUnavailable` when it does not."""
        ...

    async def start(self) -> None:
        """Connect (and bring the schema up to date); called once before use."""
        ...

    async def load(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        """The conversation's messages, oldest first (the most recent ones, if the store keeps a bound)."""
        ...

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage, *, create: bool = True) -> bool:
        """Append a message, creating the conversation if it is new; whether it was written. An answer with a
        ``run_id`` takes the place of that run's ``waiting`` answer (a run paused for approvals, now gone on).

        ``create=False`` appends only to a conversation that exists: an answer whose conversation was deleted
        while it ran is dropped (``False``) rather than bringing the conversation back.
        """
        ...

    async def paused_answer(self, user_id: str, run_id: str) -> tuple[str, StoredMessage] | None:
        """The answer so far of the user's run ``run_id`` while it waits for approvals (status ``waiting``, its
        last part a ``PausedPart``), with its conversation's id; ``None`` when there is none."""
        ...

    async def conversations(self, user_id: str, *, limit: int = 50) -> list[Conversation]:
        """The user's conversations, most recently updated first."""
        ...

    async def delete(self, user_id: str, conversation_id: str) -> bool:
        """Delete a conversation and its messages; ``False`` if the user has no such conversation."""
        ...

    async def close(self) -> None: ...
