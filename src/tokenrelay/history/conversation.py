"""The conversation rules: what a model sees of a conversation, and what of a run is written back to it.

- A question is stored as it is asked; a run's answer when the run ends (:meth:`Conversations.save_answer`), every
  ending included, so the conversation shows an answer that failed or was stopped.
- An answer is saved as its parts (text, reasoning, tool calls and results, metadata) and how it ended (usage,
  error, finish): a run that reported an error is saved as ``failed`` even when a finish came after it.
- An answer is only ever added to a conversation that is still there: a conversation deleted while its run was
  going stays deleted.
- The model's context is the stored turns with empty answers left out (no text and no tool turn: a run stopped
  before its first token), and of answers in a row (regenerates) only the latest: the history is a log, the
  context the conversation as it stands.
- ``regenerate`` asks the last question again instead of asking it twice.
- A run started with :data:`STATELESS` in its extras (OpenAI's stateless API) is not a conversation: its answer is
  not written. The flag rides on the run, so whichever instance records the run's end sees it.

Nothing here knows of HTTP or of backends: only the history, the messages and a run's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Final, Protocol

from tokenrelay.errors import StoreUnavailable
from tokenrelay.events import ErrorEvent, FinishReason, UsageEvent
from tokenrelay.history.base import History, MessageStatus, StoredMessage
from tokenrelay.messages import (
    ErrorPart,
    FinishPart,
    Message,
    Part,
    PausedPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UsagePart,
)

__all__ = ["STATELESS", "Conversations", "Outcome", "answer_message", "context", "is_stateless"]

STATELESS: Final[Mapping[str, str]] = {"stateless": "1"}
"""The run extras of a conversation that is not history: ``RunManager.start(..., extra=dict(STATELESS))``."""

_STATUS: Final[Mapping[FinishReason, MessageStatus]] = {"cancelled": "cancelled", "error": "failed"}

log = logging.getLogger("tokenrelay.history")


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
    def parts(self) -> Sequence[Part]:
        """What the answer said, in order (``tokenrelay.messages.answer_parts``); empty: its text alone."""
        ...

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


def _says_something(message: StoredMessage) -> bool:
    """Whether a model should see ``message``: it has text, or a tool turn (a call, a result)."""
    return bool(message.content) or any(isinstance(p, ToolCallPart | ToolResultPart) for p in message.parts)


def context(earlier: Sequence[StoredMessage]) -> list[Message]:
    """The turns a model sees: empty answers dropped, and of answers in a row (a regenerate) only the last."""
    out: list[Message] = []
    for m in earlier:
        if not _says_something(m):
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
    """The rules above, over a :class:`~tokenrelay.history.base.History`.

    A question is written without holding up its run (:meth:`ask` with ``new=True`` or not): the write is
    submitted, the run starts at once, and the answer's save waits for the question's write first, so the history
    keeps them in order. When that write fails, the answer is not saved (its save raises
    :class:`~tokenrelay.errors.StoreUnavailable`: the run's done frame says ``"saved": false``), and from then on
    each question waits for its write, so a history that cannot write refuses new runs (a 503) until a write
    succeeds again.
    """

    def __init__(self, history: History) -> None:
        self.history = history
        # The last question written in each conversation while its write is going on, or once it has failed.
        self._questions: dict[tuple[str, str], asyncio.Task[bool]] = {}
        self._refusing = False  # a write failed: questions wait for their write (a 503 rather than a lost answer)

    async def ask(
        self,
        user_id: str,
        conversation_id: str,
        question: str,
        *,
        regenerate: bool = False,
        new: bool = False,
    ) -> list[Message]:
        """Store ``question`` in the conversation and return what the model answers it from: the earlier turns, then
        the question.

        ``regenerate`` asks again instead of asking twice: when the last question is this same one, it is not
        stored a second time and the answers to it are left out of the context. The history keeps every answer
        (it is a log); the context only ever carries the latest answer to each question. ``new``: the conversation
        was just made up by the server (no client knows it yet), so there is nothing to load.
        """
        key = (user_id, conversation_id)
        if new:
            earlier: list[StoredMessage] = []
        else:
            await self._settled(key)  # an earlier question still being written is part of the context
            earlier = await self.history.load(user_id, conversation_id)
        before = _before_last_question(earlier, question) if regenerate else None
        messages = context(earlier if before is None else before)
        messages.append(Message("user", question))
        if before is None:
            stored = StoredMessage("user", question, created_at=time.time())
            write = asyncio.ensure_future(self._write(self.history.add(user_id, conversation_id, stored)))
            self._questions[key] = write
            write.add_done_callback(lambda w: self._written(key, w))
            if not self._refusing:
                # One step, for the write to be submitted (in a SQL history's queue, where the conversation's next
                # load waits for it; done, in memory) before the run starts: a question written then read sees itself.
                await asyncio.sleep(0)
            else:
                try:
                    await write  # StoreUnavailable: the run is refused, and nothing was written
                except BaseException:
                    self._forget(key, write)  # no run, so no answer to hold back
                    raise
        return messages

    def pending(self, user_id: str, conversation_id: str) -> asyncio.Task[bool] | None:
        """The write of the conversation's last question while it is going on (``None`` once it is done)."""
        write = self._questions.get((user_id, conversation_id))
        return write if write is not None and not write.done() else None

    async def _write(self, add: Awaitable[bool]) -> bool:
        try:
            written = await add
        except Exception:
            self._refusing = True
            raise
        self._refusing = False
        return written

    def _written(self, key: tuple[str, str], write: asyncio.Task[bool]) -> None:
        # (The failure is retrieved here, so that it is not logged as unretrieved; the answer's save reads it.)
        if write.cancelled() or write.exception() is None:
            self._forget(key, write)

    def _forget(self, key: tuple[str, str], write: asyncio.Task[bool]) -> None:
        if self._questions.get(key) is write:
            del self._questions[key]

    async def _settled(self, key: tuple[str, str]) -> asyncio.Task[bool] | None:
        """The conversation's last question write once it is done, if it is still going on or failed."""
        write = self._questions.get(key)
        if write is not None:
            await asyncio.wait([write])
        return write

    async def adopt(self, user_id: str, conversation_id: str, transcript: Sequence[Message]) -> None:
        """Make a client's ``transcript`` the conversation's history, when the server has none of it yet (a first
        request, or a conversation the client restored itself). Messages without text are left out."""
        if await self.history.load(user_id, conversation_id):
            return
        now = time.time()
        for message in transcript:
            if message.content or message.parts:
                stored = StoredMessage(message.role, message.content, created_at=now, parts=message.parts)
                await self.history.add(user_id, conversation_id, stored)

    async def save_answer(self, outcome: Outcome) -> None:
        """Write a run's answer to its conversation, however the run ended (an empty answer too), unless the
        conversation was deleted meanwhile."""
        if is_stateless(outcome.extra):
            return
        key = (outcome.user_id, outcome.conversation_id)
        question = await self._settled(key)
        if question is not None and not question.cancelled() and question.exception() is not None:
            self._forget(key, question)
            raise StoreUnavailable("the question could not be stored, so neither is its answer")
        written = await self._write(  # (a failure here too: the next questions wait for their writes)
            self.history.add(
                outcome.user_id, outcome.conversation_id, answer_message(outcome, time.time()), create=False
            )
        )
        if not written:
            log.info("run %s: its conversation was deleted; the answer is not saved", outcome.run_id)


def answer_message(outcome: Outcome, created_at: float) -> StoredMessage:
    """The message a run's outcome is saved as: its parts, then how it ended (usage, error, finish)."""
    said: list[Part] = list(outcome.parts) if outcome.parts else ([TextPart(outcome.text)] if outcome.text else [])
    if said and isinstance(said[-1], PausedPart):
        # Paused for approvals: the answer so far, and what it goes on from; no ending yet.
        return StoredMessage(
            "assistant", outcome.text, status="waiting", run_id=outcome.run_id, created_at=created_at, parts=tuple(said)
        )
    if outcome.usage is not None:
        said.append(UsagePart(outcome.usage.input_tokens, outcome.usage.output_tokens))
    error = outcome.error
    if error is not None:
        said.append(ErrorPart(error.code, error.message, error.retryable))
    said.append(FinishPart(outcome.reason))
    # An error is how the answer ended, whatever finish the backend sent after it.
    status: MessageStatus = "failed" if error is not None else _STATUS.get(outcome.reason, "complete")
    return StoredMessage(
        "assistant",
        outcome.text,
        status=status,
        run_id=outcome.run_id,
        created_at=created_at,
        error_code=error.code if error is not None else None,
        output_tokens=outcome.usage.output_tokens if outcome.usage is not None else None,
        parts=tuple(said),
    )
