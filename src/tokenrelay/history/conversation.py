"""The conversation rules: what a model sees of a conversation, and what of a run is written back to it.

- A question is stored as it is asked; a run's answer when the run ends (:meth:`Conversations.save_answer`), every
  ending included, so the conversation shows an answer that failed or was stopped.
- The model's context is the stored turns with empty answers left out, and of answers in a row (regenerates) only
  the latest: the history is a log, the context the conversation as it stands.
- ``regenerate`` asks the last question again instead of asking it twice.
- A run started with :data:`STATELESS` in its extras (OpenAI's stateless API) is not a conversation: its answer is
  not written. The flag rides on the run, so whichever instance records the run's end sees it.

Nothing here knows of HTTP or of backends: only the history, the messages and a run's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from tokenrelay.events import ErrorEvent, FinishReason, UsageEvent
from tokenrelay.history.base import History, MessageStatus, StoredMessage
from tokenrelay.messages import Message

__all__ = ["STATELESS", "Conversations", "Outcome", "context", "is_stateless"]

STATELESS: Final[Mapping[str, str]] = {"stateless": "1"}
"""The run extras of a conversation that is not history: ``RunManager.start(..., extra=dict(STATELESS))``."""

_STATUS: Final[Mapping[FinishReason, MessageStatus]] = {"cancelled": "cancelled", "error": "failed"}


class Outcome(Protocol):
    """How a run ended, as far as its conversation is concerned (``tokenrelay.runs.RunOutcome`` is one)."""

    @property
    def run_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def reason(self) -> FinishReason: ...
    @property
    def usage(self) -> UsageEvent | None: ...
    @property
    def error(self) -> ErrorEvent | None: ...
    @property
    def extra(self) -> Mapping[str, str]: ...


def is_stateless(extra: Mapping[str, str]) -> bool:
    """Whether a run's extras mark it as not part of any conversation's history."""
    return extra.get("stateless") == STATELESS["stateless"]


def context(earlier: Sequence[StoredMessage]) -> list[Message]:
    """The turns a model sees: empty answers dropped, and of answers in a row (a regenerate) only the last."""
    out: list[Message] = []
    for m in earlier:
        if not m.content:
            continue
        if m.role == "assistant" and out and out[-1].role == "assistant":
            out[-1] = m.as_message()
        else:
            out.append(m.as_message())
    return out


def _before_last_question(earlier: Sequence[StoredMessage], question: str) -> list[StoredMessage] | None:
    """The turns before the last question when that question is ``question``; ``None`` when it is another one."""
    last = len(earlier)
    while last and earlier[last - 1].role == "assistant":
        last -= 1
    # Only when the last question is this one: a retry of a request that never reached the server must not drop
    # the answer before it.
    if last and earlier[last - 1].role == "user" and earlier[last - 1].content == question:
        return list(earlier[: last - 1])
    return None


class Conversations:
    """The rules above, over a :class:`~tokenrelay.history.base.History`."""

    def __init__(self, history: History) -> None:
        self.history = history

    async def ask(
        self, user_id: str, conversation_id: str, question: str, *, regenerate: bool = False
    ) -> list[Message]:
        """Store ``question`` in the conversation and return what the model answers it from: the earlier turns, then
        the question.

        ``regenerate`` asks again instead of asking twice: when the last question is this same one, it is not
        stored a second time and the answers to it are left out of the context. The history keeps every answer
        (it is a log); the context only ever carries the latest answer to each question.
        """
        earlier = await self.history.load(user_id, conversation_id)
        before = _before_last_question(earlier, question) if regenerate else None
        messages = context(earlier if before is None else before)
        messages.append(Message("user", question))
        if before is None:
            await self.history.add(user_id, conversation_id, StoredMessage("user", question, created_at=time.time()))
        return messages

    async def adopt(self, user_id: str, conversation_id: str, transcript: Sequence[Message]) -> None:
        """Make a client's ``transcript`` the conversation's history, when the server has none of it yet (a first
        request, or a conversation the client restored itself). Messages without text are left out."""
        if await self.history.load(user_id, conversation_id):
            return
        now = time.time()
        for message in transcript:
            if message.content:
                await self.history.add(
                    user_id, conversation_id, StoredMessage(message.role, message.content, created_at=now)
                )

    async def save_answer(self, outcome: Outcome) -> None:
        """Write a run's answer to its conversation, however the run ended (an empty answer too)."""
        if is_stateless(outcome.extra):
            return
        await self.history.add(
            outcome.user_id,
            outcome.conversation_id,
            StoredMessage(
                "assistant",
                outcome.text,
                status=_STATUS.get(outcome.reason, "complete"),
                run_id=outcome.run_id,
                created_at=time.time(),
                error_code=outcome.error.code if outcome.error is not None else None,
                output_tokens=outcome.usage.output_tokens if outcome.usage is not None else None,
            ),
        )
