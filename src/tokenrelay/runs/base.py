"""What the runs package hands out: run ids, heartbeats, the disconnect policy's name and a run's outcome."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    FinishReason,
    RunPaused,
    TextDelta,
    ToolApprovalRequest,
    UsageEvent,
)
from tokenrelay.messages import Part, answer_parts
from tokenrelay.stores.base import RunInfo

__all__ = ["HEARTBEAT", "DisconnectPolicy", "Heartbeat", "RunOutcome", "Transcript", "new_id", "new_run_id"]

DisconnectPolicy = Literal["cancel", "detach"]


class Heartbeat:
    """Yielded by a subscription when the run has been silent for the heartbeat interval."""

    __slots__ = ()


HEARTBEAT = Heartbeat()


def new_id(nbytes: int) -> str:
    """``nbytes`` random bytes, URL-safe, never starting with ``-``: an id is typed on command lines
    (``tokenrelay approve RUN_ID …``), where a leading dash reads as an option."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if token[0] != "-":
            return token


def new_run_id() -> str:
    """128 random bits, URL-safe: a run id is a capability to read the run, so it must not be guessable."""
    return new_id(16)


@dataclass(slots=True)
class RunOutcome:
    """What a run produced, handed to ``on_finish`` (to write history) when it ends for any reason."""

    run_id: str
    user_id: str
    conversation_id: str
    text: str
    reason: FinishReason
    usage: UsageEvent | None
    error: ErrorEvent | None
    # Per-run flags set at start (``RunManager.start(extra=...)``), e.g. ``{"stateless": "1"}``: carried on the run
    # rather than kept by the instance, so whichever instance ends the run sees them.
    extra: dict[str, str] = field(default_factory=dict)
    parts: tuple[Part, ...] = ()  # what the answer said, in order: text, reasoning, tool calls and results, metadata


COMPACT_EVERY = 64
"""How many text deltas a transcript keeps apart before joining them (:meth:`Transcript.compact`)."""


@dataclass(slots=True)
class Transcript:
    """What a run has said so far, and how it ended: the one place a :class:`RunOutcome` is built from.

    The run that drives a backend feeds it every event as it comes; an instance that ended a run whose owner died
    feeds it the run's log. Either way the outcome is built by :meth:`outcome`.
    """

    texts: list[str] = field(default_factory=list)
    usage: UsageEvent | None = None
    error: ErrorEvent | None = None  # the last error the backend reported, or the failure that ended the run
    reason: FinishReason = "stop"
    finished: bool = False  # the backend sent its finish event; nothing after it counts
    # The other events the parts are built from, each with how many texts came before it (text stays a plain list).
    marks: list[tuple[int, Event]] = field(default_factory=list)
    # The approval requests since the last pause: what a Suspend from the backend leaves waiting.
    requests: list[ToolApprovalRequest] = field(default_factory=list)

    @classmethod
    def of_log(cls, events: Iterable[Event]) -> Transcript:
        """The transcript of a whole log: every event counts, even after a finish event (an instance that ends a
        dead owner's run appends its own ending after whatever the owner had written)."""
        transcript = cls()
        for event in events:
            transcript.note(event)
        return transcript

    def take(self, event: Event) -> bool:
        """Note an event the backend sent; whether it belongs in the run's log now.

        Nothing after the backend's finish event does, nor the finish event itself: the run appends that last,
        once, however the run ends (and after history).
        """
        if self.finished:
            return False
        self.note(event)
        return not self.finished

    def note(self, event: Event) -> None:
        """Keep what the outcome needs of ``event``: its text, the last usage and error, the finish reason."""
        if type(event) is TextDelta:
            self.texts.append(event.text)
        elif isinstance(event, FinishEvent):
            # An error the backend reported and then finished anyway still failed the answer: it ends as an error.
            self.reason = "error" if self.error is not None else event.reason
            self.finished = True
        elif isinstance(event, UsageEvent):
            self.usage = event
        elif isinstance(event, ErrorEvent):
            self.error = event
        elif isinstance(event, RunPaused):
            self.requests.clear()  # answered, all of them, before the run went on
        else:
            if isinstance(event, ToolApprovalRequest):
                self.requests.append(event)
            self.marks.append((len(self.texts), event))

    def compact(self) -> int:
        """Join the last ``COMPACT_EVERY`` texts (those since the last other event, at most) into one, and how many
        texts to let accumulate before doing it again: a long answer's deltas would otherwise each cost a pointer
        (and the list's spare room) for as long as the run lasts. The marks' positions stay right: nothing before
        the last one moves. Each text is joined once (no re-joining of what was joined before)."""
        texts = self.texts
        start = max(self.marks[-1][0] if self.marks else 0, len(texts) - COMPACT_EVERY)
        if len(texts) - start > 1:
            texts[start:] = ["".join(texts[start:])]
        return len(texts) + COMPACT_EVERY

    def backend_ended(self) -> None:
        """The backend's stream ran out: an error it reported without finishing is how the run ends."""
        if self.error is not None and not self.finished:
            self.reason = "error"

    def stopped(self, reason: FinishReason, error: ErrorEvent | None = None) -> None:
        """The run was stopped (cancelled) or failed (``error``) before the backend finished."""
        self.reason = reason
        if error is not None:
            self.error = error

    def outcome(self, info: RunInfo, reason: FinishReason | None = None) -> RunOutcome:
        """The run's outcome, with ``reason`` (if given) in place of the one the transcript saw."""
        return RunOutcome(
            run_id=info.run_id,
            user_id=info.user_id,
            conversation_id=info.conversation_id,
            text="".join(self.texts),
            reason=reason or self.reason,
            usage=self.usage,
            error=self.error,
            extra=dict(info.extra),
            parts=answer_parts(self.texts, self.marks),
        )
