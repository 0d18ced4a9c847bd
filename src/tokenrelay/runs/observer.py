"""What an observer (tracing, run logs) sees of a run: its start, its first token, its end.

A few calls per run and none per event, so an observer costs nothing on the streaming path. The run manager asks
its observer for a :class:`RunWatch` as a run starts (in the starting request's context, so a tracer can take the
request's span as the run's parent), enters the watch in the context the run's task will run in, and the driver
tells the watch about the run's first text and its end; a remote backend, about its upstream's latency
(:mod:`tokenrelay.backends.upstream_timing`). Without an observer every run gets :data:`NO_WATCH`, which
does nothing.

:data:`current_run` is the run a task drives, set in every run's task (log records use it to say which run they
concern).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from tokenrelay.backends.upstream_timing import upstream_listener

if TYPE_CHECKING:
    from tokenrelay.runs.base import Transcript
    from tokenrelay.stores.base import RunInfo

__all__ = ["NO_WATCH", "Observers", "RunObserver", "RunWatch", "current_run", "task_context"]

log = logging.getLogger("tokenrelay.runs")

current_run: contextvars.ContextVar[RunInfo | None] = contextvars.ContextVar("tokenrelay_current_run", default=None)


class RunWatch:
    """One run, as an observer follows it. Every method here does nothing: override the ones you need.

    A watch must not raise (the driver does not expect it to); :class:`Observers` guards the ones it composes.
    """

    __slots__ = ()

    def enter(self) -> None:
        """Called once in the context the run's task runs in, before its first step (e.g. to make a span current)."""
        return None

    def first_token(self) -> None:
        """The run's first text delta came from the backend."""
        return None

    def upstream_responded(self, seconds: float) -> None:
        """A remote backend's upstream answered (its response head), ``seconds`` after the request was sent."""
        return None

    def ended(self, transcript: Transcript, *, lost: bool, paused: bool = False) -> None:
        """The run's end is recorded (``transcript.reason``, ``.usage``, ``.error``); ``lost``: another instance
        ended it (this one was taken for dead), so the transcript may not be its whole story; ``paused``: it
        waits for a tool call's approval (its continuation, if any, is watched as a run of its own)."""
        return None


NO_WATCH = RunWatch()


class RunObserver(Protocol):
    """Watches every run a run manager starts."""

    def run_started(self, info: RunInfo) -> RunWatch:
        """A run starts (called in the context of whoever started it); its watch."""
        ...


class Observers:
    """Several observers as one: each run gets a watch from each, and a watch that fails is logged, not raised."""

    def __init__(self, observers: Sequence[RunObserver]) -> None:
        self.observers = tuple(observers)

    def run_started(self, info: RunInfo) -> RunWatch:
        watches: list[RunWatch] = []
        for observer in self.observers:
            try:
                watches.append(observer.run_started(info))
            except Exception:
                log.exception("run %s: observer %s failed at the start", info.run_id, type(observer).__name__)
        watches = [w for w in watches if w is not NO_WATCH]
        if not watches:
            return NO_WATCH
        return watches[0] if len(watches) == 1 else _Watches(watches)


class _Watches(RunWatch):
    __slots__ = ("watches",)

    def __init__(self, watches: list[RunWatch]) -> None:
        self.watches = watches

    def enter(self) -> None:
        for watch in self.watches:
            _guarded(watch.enter)

    def first_token(self) -> None:
        for watch in self.watches:
            _guarded(watch.first_token)

    def upstream_responded(self, seconds: float) -> None:
        for watch in self.watches:
            try:
                watch.upstream_responded(seconds)
            except Exception:
                log.exception("a run watch failed")

    def ended(self, transcript: Transcript, *, lost: bool, paused: bool = False) -> None:
        for watch in self.watches:
            try:
                watch.ended(transcript, lost=lost, paused=paused)
            except Exception:
                log.exception("a run watch failed at the run's end")


def _guarded(call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:
        log.exception("a run watch failed")


def task_context(info: RunInfo, watch: RunWatch) -> contextvars.Context:
    """The context a run's task runs in: the starter's, with :data:`current_run` set and the watch entered."""
    context = contextvars.copy_context()
    context.run(_enter, info, watch)
    return context


def _enter(info: RunInfo, watch: RunWatch) -> None:
    current_run.set(info)
    if watch is not NO_WATCH:
        upstream_listener.set(watch.upstream_responded)  # what a remote backend reports of its upstream
    try:
        watch.enter()
    except Exception:
        log.exception("run %s: a run watch failed to enter", info.run_id)
