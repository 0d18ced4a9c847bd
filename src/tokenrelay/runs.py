"""Runs: one generation each, on its own task, writing numbered events into a run store.

A connection never drives a backend. It subscribes to a run from a cursor and is told about new events, so a
dropped client can come back to the same run, many viewers cost one generation, and what the model said is saved
by the run when it ends — not by whichever connection happened to be open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenrelay.backends.base import Backend, BackendError, GenerateOptions, Message
from tokenrelay.coalescing import Coalescer, coalesce
from tokenrelay.errors import RunClosedError, RunLimitError, RunNotFound
from tokenrelay.events import ErrorEvent, Event, FinishEvent, FinishReason, TextDelta, UsageEvent
from tokenrelay.stores.base import RunInfo, RunStore, StoredEvent

__all__ = [
    "HEARTBEAT",
    "DisconnectPolicy",
    "Heartbeat",
    "RunLimitError",
    "RunManager",
    "RunNotFound",
    "RunOutcome",
    "Subscription",
    "coalesce",
    "new_run_id",
]

log = logging.getLogger("tokenrelay.runs")

DisconnectPolicy = Literal["cancel", "detach"]


class Heartbeat:
    """Yielded by a subscription when the run has been silent for the heartbeat interval."""

    __slots__ = ()


HEARTBEAT = Heartbeat()


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


def new_run_id() -> str:
    """128 random bits, URL-safe: a run id is a capability to read the run, so it must not be guessable."""
    return secrets.token_urlsafe(16)


class Subscription:
    """An async iterator over a run's events for one viewer; ``aclose()`` it when the viewer leaves."""

    __slots__ = ("_closed", "_counted", "_gen", "_manager", "_run", "_run_id")

    def __init__(
        self,
        manager: RunManager,
        run_id: str,
        run: _Run | None,
        gen: AsyncGenerator[list[StoredEvent] | Heartbeat, None],
        *,
        counted: bool,
    ) -> None:
        self._manager = manager
        self._run_id = run_id
        self._run = run
        self._gen = gen
        self._counted = counted  # whether it was counted as a viewer in the store (only while the run was running)
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[StoredEvent] | Heartbeat:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._gen.aclose()
        finally:
            await self._manager._unsubscribe(self._run_id, self._run, counted=self._counted)


@dataclass(slots=True)
class _Run:
    info: RunInfo
    task: asyncio.Task[None] | None = None
    subscribers: int = 0
    detach_timer: asyncio.TimerHandle | None = None
    started: bool = False
    cancel_requested: bool = False
    finishing: bool = False  # the backend is done; the run is recording its end and must not be interrupted
    lost: bool = False  # ended by another instance (this one was taken for dead): stop, record nothing
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RunManager:
    """Starts, tracks, cancels and finishes the runs of one instance.

    ``on_disconnect`` is what happens when a run's last subscriber leaves: ``"cancel"`` stops the backend at once;
    ``"detach"`` lets the run go on for ``detach_grace_s`` seconds so the client can resume, and cancels it if
    nobody has come back by then.

    With a shared store (Redis) the manager of each instance drives only the runs it started, but viewers and
    cancels count wherever they happen: viewers are counted in the store, and the store tells the owning manager
    (as its ``StoreListener``) when another instance asks to cancel one of its runs or saw its last viewer leave.
    The policy is always applied by the owner, against the global count, so a viewer who left instance B while
    another still watches on C cancels nothing.
    """

    def __init__(
        self,
        backend: Backend,
        store: RunStore,
        *,
        heartbeat_s: float = 15.0,
        on_disconnect: DisconnectPolicy = "cancel",
        detach_grace_s: float = 30.0,
        max_active_runs: int = 10_000,
        coalesce_window_s: float = 0.0,
        coalesce_max_s: float = 0.1,
        on_finish: Callable[[RunOutcome], Awaitable[None]] | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.on_disconnect = on_disconnect
        self.detach_grace_s = detach_grace_s
        self.max_active_runs = max_active_runs
        self.coalesce_window_s = coalesce_window_s
        self.coalescer = Coalescer(floor_s=coalesce_window_s, max_s=coalesce_max_s)
        # For metrics, kept cheap: a count added to once per write, one call per new stream.
        self.tokens_out = 0  # text deltas written to streams
        self.first_token_observer: Callable[[float], None] | None = None  # seconds from a stream's start
        self.on_finish = on_finish
        self._runs: dict[str, _Run] = {}
        self._chores: set[asyncio.Task[None]] = set()  # small background checks, kept so they are not collected
        store.attach(self)

    @property
    def active_runs(self) -> int:
        return len(self._runs)

    @property
    def subscribers(self) -> int:
        return sum(r.subscribers for r in self._runs.values())

    async def start(
        self,
        messages: Sequence[Message],
        *,
        user_id: str,
        conversation_id: str,
        options: GenerateOptions | None = None,
    ) -> RunInfo:
        if len(self._runs) >= self.max_active_runs:
            raise RunLimitError(f"this instance is running its maximum of {self.max_active_runs} runs")
        info = RunInfo(
            run_id=new_run_id(),
            user_id=user_id,
            conversation_id=conversation_id,
            backend=self.backend.name,
            created_at=time.time(),
        )
        await self.store.create(info)
        run = _Run(info)
        self._runs[info.run_id] = run
        run.task = asyncio.create_task(
            self._drive(run, list(messages), options or GenerateOptions()), name=f"run-{info.run_id}"
        )
        return info

    async def cancel(self, run_id: str, *, timeout: float = 10.0) -> bool:
        """Stop a run, here or on the instance that drives it; ``False`` if it is not running anywhere.

        Returns once the run's end is recorded (its backend closed, its finish event stored), or after ``timeout``.
        """
        run = self._runs.get(run_id)
        if run is not None:
            self._cancel(run)
            await run.done.wait()
            return True
        if not await self.store.request_cancel(run_id):
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wait_finished(run_id)
        return True

    async def _wait_finished(self, run_id: str) -> None:
        """Wait until a run driven elsewhere has its finish event in the store."""
        info = await self.store.get(run_id)
        cursor = info.last_seq if info is not None else 0
        while info is not None and info.status == "running":
            batch = await self.store.read(run_id, cursor, self.heartbeat_s)
            if batch:
                cursor = batch[-1].seq
                if type(batch[-1].event) is FinishEvent:
                    return
            else:
                info = await self.store.get(run_id)

    @staticmethod
    def _cancel(run: _Run) -> None:
        # Cancel once, and only while the backend is running: a second cancel (an explicit one racing the last
        # viewer leaving) landing while the run records its end would cut that short and leave it running forever.
        if run.cancel_requested:
            return
        run.cancel_requested = True
        # A task cancelled before its first step never enters its body, so it could not record its end:
        # an unstarted run sees the flag as soon as it starts instead.
        if run.started and not run.finishing and run.task is not None:
            run.task.cancel()

    async def wait(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            await run.done.wait()

    async def shutdown(self) -> None:
        """Cancel every run (recording partial answers) and wait for them to end."""
        runs = list(self._runs.values())
        for run in runs:
            self._cancel(run)
        for run in runs:
            await run.done.wait()

    async def subscribe(self, run_id: str, after: int = 0) -> Subscription:
        """Follow a run from ``after``: batches of events (coalesced), heartbeats while it is silent.

        The subscription counts as a viewer from this call until ``aclose()`` — even if it is never iterated, which
        is what happens when a client disconnects before the first byte.
        """
        info = await self.store.get(run_id)
        if info is None:
            raise RunNotFound(run_id)
        run = self._runs.get(run_id)
        if run is not None:
            run.subscribers += 1
            if run.detach_timer is not None:
                run.detach_timer.cancel()
                run.detach_timer = None
        counted = info.status == "running"
        if counted:
            await self.store.add_viewer(run_id)
        return Subscription(self, run_id, run, self._follow(run_id, after), counted=counted)

    async def _unsubscribe(self, run_id: str, run: _Run | None, *, counted: bool) -> None:
        if run is not None:
            run.subscribers -= 1
        if not counted:
            return
        try:
            remaining = await self.store.remove_viewer(run_id)
        except Exception:
            log.exception("run %s: could not count a viewer leaving", run_id)
            return
        # A run driven elsewhere: the store has told its owner, which applies the policy.
        if remaining == 0 and run is not None and not run.done.is_set():
            self._last_subscriber_left(run)

    # StoreListener: what other instances ask of the runs this one drives.

    def cancel_requested(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            log.debug("run %s: cancel requested by another instance", run_id)
            self._cancel(run)

    def run_lost(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None and not run.done.is_set():
            log.warning("run %s: ended by another instance (this one was taken for dead); stopping", run_id)
            run.lost = True
            self._cancel(run)

    def viewers_gone(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None and not run.done.is_set():
            self._chore(self._apply_policy_if_unwatched(run))

    async def run_interrupted(self, info: RunInfo, events: Sequence[StoredEvent]) -> None:
        """This instance ended a run whose owner died: save what it had said, as the owner would have."""
        if self.on_finish is None:
            return
        text = "".join(e.event.text for e in events if type(e.event) is TextDelta)
        error = next((e.event for e in reversed(events) if isinstance(e.event, ErrorEvent)), None)
        usage = next((e.event for e in reversed(events) if isinstance(e.event, UsageEvent)), None)
        outcome = RunOutcome(info.run_id, info.user_id, info.conversation_id, text, "error", usage, error)
        await self._report(outcome)

    def _chore(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _report(self, outcome: RunOutcome) -> None:
        assert self.on_finish is not None
        try:
            await self.on_finish(outcome)
        except Exception:
            log.exception("run %s: saving the outcome failed", outcome.run_id)

    async def _apply_policy_if_unwatched(self, run: _Run) -> None:
        try:
            watched = await self.store.viewers(run.info.run_id) > 0
        except Exception:
            log.exception("run %s: could not count its viewers", run.info.run_id)
            return
        if not watched and not run.done.is_set():
            self._last_subscriber_left(run)

    async def _follow(self, run_id: str, after: int) -> AsyncGenerator[list[StoredEvent] | Heartbeat, None]:
        loop = asyncio.get_running_loop()
        store = self.store
        coalescer = self.coalescer
        last_write = -math.inf  # the first delta is never held
        cursor = after
        started = loop.time()
        first_token = after == 0 and self.first_token_observer is not None
        coalescer.stream_started()
        try:
            while True:
                # Deltas that come within the window of the last write wait for its end and go out together.
                until = last_write + coalescer.window_s
                if until > loop.time():
                    await coalescer.sleep_until(until)
                batch = await store.read_coalesced(run_id, cursor, self.heartbeat_s)
                if not batch:
                    info = await store.get(run_id)
                    if info is None or info.status == "finished":
                        return
                    yield HEARTBEAT
                    continue
                # Text deltas in the batch: every id it advances by, but for the events that are not text.
                tokens = batch[-1].seq - cursor
                for item in batch:
                    if type(item.event) is not TextDelta:
                        tokens -= 1
                cursor = batch[-1].seq
                yield batch
                last_write = loop.time()
                if tokens:
                    self.tokens_out += tokens
                    if first_token:
                        first_token = False
                        self.first_token_observer(last_write - started)  # type: ignore[misc]
                if type(batch[-1].event) is FinishEvent:
                    return
        finally:
            coalescer.stream_ended()

    def _last_subscriber_left(self, run: _Run) -> None:
        if self.on_disconnect == "cancel":
            log.debug("run %s: last subscriber left, cancelling", run.info.run_id)
            self._cancel(run)
        elif run.detach_timer is None:

            def expire() -> None:
                run.detach_timer = None
                if run.subscribers == 0 and not run.done.is_set():
                    # Somebody may have come back on another instance: ask the store before cancelling.
                    self._chore(self._cancel_if_unwatched(run))

            run.detach_timer = asyncio.get_running_loop().call_later(self.detach_grace_s, expire)

    async def _cancel_if_unwatched(self, run: _Run) -> None:
        try:
            watched = await self.store.viewers(run.info.run_id) > 0
        except Exception:
            watched = False  # the store is unreachable: nobody can be reading the run anyway
        if not watched and not run.done.is_set():
            log.debug("run %s: nobody came back in %.0fs, cancelling", run.info.run_id, self.detach_grace_s)
            self._cancel(run)

    async def _drive(self, run: _Run, messages: list[Message], options: GenerateOptions) -> None:
        run_id = run.info.run_id
        text: list[str] = []
        usage: UsageEvent | None = None
        error: ErrorEvent | None = None
        reason: FinishReason = "stop"
        finished = False
        closed = False  # ended elsewhere: another instance wrote its end, so this one writes nothing more
        try:
            run.started = True
            if run.cancel_requested:
                raise asyncio.CancelledError
            stream = self.backend.stream(messages, options)
            try:
                async for event in stream:
                    if finished:
                        continue  # nothing follows the finish; let the backend end by itself
                    if type(event) is TextDelta:
                        text.append(event.text)
                    elif isinstance(event, FinishEvent):
                        reason = event.reason
                        finished = True
                        continue  # the finish event is appended below, once, whatever happens
                    elif isinstance(event, UsageEvent):
                        usage = event
                    elif isinstance(event, ErrorEvent):
                        error = event
                    await self.store.append(run_id, (event,))
            finally:
                # Closing the backend's iterator is what stops its upstream work (HTTP response, sampler).
                await stream.aclose()
            if error is not None and not finished:
                reason = "error"
        except asyncio.CancelledError:
            run.finishing = True
            reason = "cancelled"
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except RunClosedError:
            run.finishing = True
            log.warning("run %s: ended by another instance (this one was taken for dead); stopping", run_id)
            closed = True
        except BackendError as exc:
            run.finishing = True
            error = ErrorEvent(exc.code, exc.message, exc.retryable, exc.retry_after)
            reason = "error"
            await self._append_quietly(run_id, error)
        except Exception as exc:
            run.finishing = True
            log.exception("run %s: backend %s failed", run_id, self.backend.name)
            error = ErrorEvent("internal_error", f"{type(exc).__name__}: {exc}", False)
            reason = "error"
            await self._append_quietly(run_id, error)
        finally:
            run.finishing = True
            closed = closed or run.lost
            # History first, then the finish event: a client that saw "done" and sends a follow-up at once
            # must find this answer in the conversation.
            if self.on_finish is not None and not closed:
                outcome = RunOutcome(
                    run_id=run_id,
                    user_id=run.info.user_id,
                    conversation_id=run.info.conversation_id,
                    text="".join(text),
                    reason=reason,
                    usage=usage,
                    error=error,
                )
                try:
                    await self.on_finish(outcome)
                except Exception:
                    log.exception("run %s: saving the outcome failed", run_id)
            if not closed:
                await self._append_quietly(run_id, FinishEvent(reason))
            with contextlib.suppress(Exception):
                await self.store.finish(run_id)
            run.info.status = "finished"
            self._runs.pop(run_id, None)
            if run.detach_timer is not None:
                run.detach_timer.cancel()
            run.done.set()

    async def _append_quietly(self, run_id: str, event: Event) -> None:
        try:
            await self.store.append(run_id, (event,))
        except RunClosedError:
            log.debug("run %s: already ended elsewhere, %s not recorded", run_id, event.type)
        except Exception:
            log.exception("run %s: could not record %s", run_id, event.type)
