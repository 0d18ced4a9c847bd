"""A run driven by this instance, and the one state that says where it is in its life."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from tokenrelay._latch import Latch
from tokenrelay.events import ErrorEvent, Event
from tokenrelay.runs.observer import NO_WATCH, RunWatch
from tokenrelay.stores.base import RunInfo

__all__ = ["Latch", "Run", "RunState"]


class RunState(enum.Enum):
    """Where a run driven here is. Every transition is a method of :class:`Run`, and these are all of them::

        PENDING          begin()      -> RUNNING      the task's first step
        PENDING          cancel()     -> CANCELLING   the task is not cancelled: it sees this at its first step
        RUNNING          cancel()     -> CANCELLING   the task is cancelled
        PENDING, RUNNING stop(error)  -> CANCELLING   as cancel(), but the run ends with ``error`` (a shutdown)
        RUNNING          finishing()  -> FINISHING    the backend ended or failed
        CANCELLING       finishing()  -> FINISHING    the backend, stopped, has closed
        any but DONE     lose()       -> LOST         the task is cancelled if RUNNING; finishing() keeps LOST
        FINISHING, LOST  end()        -> DONE

    Any other call changes nothing: a cancel acts once, and only on a backend that has not ended, so the end,
    once it is being recorded, is never interrupted. A lost run stops like a cancelled one but records nothing
    more: another instance ended it.
    """

    PENDING = "pending"  # created; its task has not taken its first step
    RUNNING = "running"  # the backend is streaming into the store
    CANCELLING = "cancelling"  # asked to stop (the task is cancelled, or will stop at its first step)
    LOST = "lost"  # ended by another instance (this one was taken for dead): stop, and record nothing more
    FINISHING = "finishing"  # the backend is done; the run is recording its end (history, then the finish event)
    DONE = "done"  # ended; ``Run.done`` is set


@dataclass(slots=True)
class Run:
    """The bookkeeping of one run this instance drives: its task, its local viewers, its state."""

    info: RunInfo
    task: asyncio.Task[None] | None = None
    subscribers: int = 0  # viewers on this instance (the store counts them across instances)
    detach_timer: asyncio.TimerHandle | None = None
    state: RunState = RunState.PENDING
    done: Latch = field(default_factory=Latch)
    # Why the run was stopped, when it is not a plain cancel: the error it ends with (``stop``).
    stop_error: ErrorEvent | None = None
    # The end the store could not take (it failed): this instance's viewers are handed it instead.
    ending: list[Event] = field(default_factory=list)
    # What an observer (tracing, run logs) follows of this run: its first token and its end.
    watch: RunWatch = NO_WATCH
    # What the run's first event waits for before it is stored (its question's write: ``RunManager.start``).
    after: asyncio.Future[Any] | None = None

    def begin(self) -> bool:
        """The task's first step: the run is running, unless it was cancelled or lost before (then ``False``)."""
        if self.state is RunState.PENDING:
            self.state = RunState.RUNNING
            return True
        return False

    def cancel(self) -> None:
        """Stop the backend: once, and only while it runs."""
        if self.state is RunState.PENDING:
            # A task cancelled before its first step never enters its body, so it could not record its end: the
            # task sees the state at its first step instead, and ends there.
            self.state = RunState.CANCELLING
        elif self.state is RunState.RUNNING:
            self.state = RunState.CANCELLING
            self._interrupt()
        # Otherwise it is stopping or recording its end already. A second cancel (an explicit one racing the last
        # viewer leaving) landing while the run records its end would cut that short and leave it running forever.

    def stop(self, error: ErrorEvent) -> None:
        """Stop the backend like :meth:`cancel`, to end the run with ``error`` rather than as cancelled; a run
        already stopping or recording its end keeps the end it has."""
        if self.state in (RunState.PENDING, RunState.RUNNING):
            self.stop_error = error
            self.cancel()

    def lose(self) -> None:
        """Another instance ended this run: stop it if it still runs, and let it record nothing from now on."""
        if self.state is RunState.DONE:
            return
        if self.state is RunState.RUNNING:
            self._interrupt()
        self.state = RunState.LOST

    def finishing(self) -> None:
        """The backend has stopped, for whatever reason: the run records its end now, and nothing may interrupt it."""
        if self.state is not RunState.LOST:
            self.state = RunState.FINISHING

    @property
    def lost(self) -> bool:
        """Whether another instance ended the run, so that this one must not record its end."""
        return self.state is RunState.LOST

    def end(self) -> None:
        """The end is recorded: wake whoever waits for it."""
        self.state = RunState.DONE
        if self.detach_timer is not None:
            self.detach_timer.cancel()
            self.detach_timer = None
        self.done.set()

    @property
    def ended(self) -> bool:
        return self.state is RunState.DONE

    def _interrupt(self) -> None:
        if self.task is not None:
            self.task.cancel()
