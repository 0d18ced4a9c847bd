"""The run lifecycle: starting runs, driving each backend into the store on its own task, cancelling, recording ends.

A connection never drives a backend. It subscribes to a run from a cursor and is told about new events (see
:mod:`tokenrelay.runs.subscription`), so a dropped client can come back to the same run, many viewers cost one
generation, and what the model said is saved by the run when it ends — not by whichever connection was open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tokenrelay.backends.base import ApprovalDecision, Backend, GenerateOptions
from tokenrelay.coalescing import Coalescer
from tokenrelay.errors import RunLimitError, RunNotFound, StoreUnavailable
from tokenrelay.events import ErrorEvent, FinishEvent, RunPaused, ToolApprovalResponse
from tokenrelay.messages import Message
from tokenrelay.runs.base import DisconnectPolicy, RunOutcome, Transcript, new_run_id
from tokenrelay.runs.drive import Driver
from tokenrelay.runs.observer import NO_WATCH, RunObserver, task_context
from tokenrelay.runs.state import Run
from tokenrelay.runs.subscription import Subscription, Subscriptions
from tokenrelay.stores.base import DecisionResult, RunInfo, RunStore, StoredEvent

__all__ = ["RunManager"]

log = logging.getLogger("tokenrelay.runs")


class RunManager:
    """Starts, tracks, cancels and finishes the runs of one instance.

    ``on_disconnect`` is what happens when a run's last subscriber leaves: ``"detach"`` (the default) lets the run
    go on for ``detach_grace_s`` seconds so the client can resume, and cancels it if nobody has come back by then;
    ``"cancel"`` stops the backend at once. A lost connection is not a Stop: a client stops a run with
    :meth:`cancel`, which acts at once whatever the policy.

    Every run ends within a bounded time (see :mod:`tokenrelay.runs.drive`): a store that refuses an append is
    retried for ``append_retry_s`` seconds before the run is ended here, and saving the answer is given
    ``save_timeout_s`` seconds.

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
        on_disconnect: DisconnectPolicy = "detach",
        detach_grace_s: float = 30.0,
        max_active_runs: int = 10_000,
        coalesce_window_s: float = 0.0,
        coalesce_max_s: float = 0.1,
        on_finish: Callable[[RunOutcome], Awaitable[None]] | None = None,
        append_retry_s: float = 10.0,
        save_timeout_s: float = 15.0,
        observer: RunObserver | None = None,
        approval_expiry_s: float = 24 * 3600.0,
    ) -> None:
        self.backend = backend
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.max_active_runs = max_active_runs
        self.coalescer = Coalescer(floor_s=coalesce_window_s, max_s=coalesce_max_s)
        self._runs: dict[str, Run] = {}
        self._closing = False  # shutting down: no new runs
        self.observer = observer  # tracing, run logs: told of each run's start, first token and end
        self.resumed_runs = 0  # paused runs this instance won back and drove on (for metrics)
        self.waits_ended = 0  # runs waiting for approval that this instance ended: expired, stopped (for metrics)
        self._driver = Driver(
            backend,
            store,
            self._runs,
            on_finish=on_finish,
            append_retry_s=append_retry_s,
            save_timeout_s=save_timeout_s,
            approval_expiry_s=approval_expiry_s,
        )
        self.subscriptions = Subscriptions(
            store,
            self._runs,
            self.coalescer,
            heartbeat_s=heartbeat_s,
            on_disconnect=on_disconnect,
            detach_grace_s=detach_grace_s,
        )
        store.attach(self)

    @property
    def on_finish(self) -> Callable[[RunOutcome], Awaitable[None]] | None:
        """Called with each run's outcome when it ends (to write history)."""
        return self._driver.on_finish

    @on_finish.setter
    def on_finish(self, on_finish: Callable[[RunOutcome], Awaitable[None]] | None) -> None:
        self._driver.on_finish = on_finish

    @property
    def active_runs(self) -> int:
        """Runs this instance is driving."""
        return len(self._runs)

    @property
    def subscribers(self) -> int:
        """Subscriptions on this instance to the runs it drives."""
        return sum(r.subscribers for r in self._runs.values())

    @property
    def tokens_out(self) -> int:
        """Text deltas written to this instance's streams (for metrics)."""
        return self.subscriptions.tokens_out

    @property
    def first_token_observer(self) -> Callable[[float], None] | None:
        """Called once per new stream with the seconds from its start to its first text (for metrics)."""
        return self.subscriptions.first_token_observer

    @first_token_observer.setter
    def first_token_observer(self, observer: Callable[[float], None] | None) -> None:
        self.subscriptions.first_token_observer = observer

    async def start(
        self,
        messages: Sequence[Message],
        *,
        user_id: str,
        conversation_id: str,
        options: GenerateOptions | None = None,
        extra: dict[str, str] | None = None,
        after: asyncio.Future[Any] | None = None,
    ) -> RunInfo:
        """Start a run on its own task and return its info (stored before the task starts).

        ``extra`` is kept in ``RunInfo.extra`` and handed back in ``RunOutcome.extra``. ``after`` (the question's
        write) is waited for, up to ``drive.QUESTION_WAIT_S``, before the run's first event is stored: the backend
        starts at once, but no reader, here or on another instance, sees an answer whose question is not stored yet.
        """
        if self._closing:
            raise RunLimitError("this instance is shutting down")
        if len(self._runs) >= self.max_active_runs:
            raise RunLimitError(f"this instance is running its maximum of {self.max_active_runs} runs")
        info = RunInfo(
            run_id=new_run_id(),
            user_id=user_id,
            conversation_id=conversation_id,
            backend=self.backend.name,
            created_at=time.time(),
            extra=dict(extra or {}),
        )
        await self.store.create(info)
        # The watch is made here, in the starter's context (a request's span is the run's parent).
        watch = self.observer.run_started(info) if self.observer is not None else NO_WATCH
        run = Run(info, watch=watch, after=after)
        self._runs[info.run_id] = run
        run.task = asyncio.create_task(
            self._driver.drive(run, list(messages), options or GenerateOptions()),
            name=f"run-{info.run_id}",
            context=task_context(info, watch),
        )
        return info

    async def approve(self, run_id: str, user_id: str, decision: ApprovalDecision) -> DecisionResult:
        """Answer one approval request of a paused run (see :data:`~tokenrelay.stores.base.DecisionStatus`).

        ``RunNotFound`` unless the run is ``user_id``'s. When this answer is the last one the run waited for and this
        instance won it (``resume``), the run goes on here at once, under its next ids, whoever watches it.
        """
        info = await self.store.get(run_id)
        if info is None or info.user_id != user_id:
            raise RunNotFound(run_id)
        run = self._runs.get(run_id)
        if run is not None:
            # Driven here and still pausing (saving its answer so far): the answer waits for the pause.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._driver.save_timeout_s + 5.0):
                    await run.done.wait()
        answer = ToolApprovalResponse(decision.call_id, decision.approved, decision.reason)
        result = await self.store.record_decision(run_id, answer)
        for _ in range(20):
            # Pausing on another instance: the pause is in the log a moment before the store keeps the suspension.
            if result.status != "unknown" or info.status != "running" or run is not None:
                break
            await asyncio.sleep(0.1)
            info = await self.store.get(run_id) or info
            result = await self.store.record_decision(run_id, answer)
        if result.status == "resume":
            self._resume(info, result)
        return result

    def _resume(self, info: RunInfo, result: DecisionResult) -> None:
        """Drive a run this instance won back from its pause."""
        suspension = result.suspension
        assert suspension is not None
        info.status = "running"
        self.resumed_runs += 1
        # Its continuation is watched as a run of its own (a span under the request that sent the last answer).
        watch = self.observer.run_started(info) if self.observer is not None else NO_WATCH
        run = Run(info, watch=watch)
        self._runs[info.run_id] = run
        decisions = [ApprovalDecision(d.call_id, d.approved, d.reason) for d in result.decisions]
        run.task = asyncio.create_task(
            self._driver.resume(run, suspension, decisions),
            name=f"run-{info.run_id}",
            context=task_context(info, watch),
        )

    async def cancel(self, run_id: str, *, timeout: float = 10.0) -> bool:
        """Stop a run, here or on the instance that drives it; ``False`` if it is not running anywhere.

        Returns once the run's end is recorded (its backend closed, its finish event stored), or after ``timeout``
        whatever the store does. ``StoreUnavailable`` when the store cannot be asked (or does not answer in time)
        whether another instance drives the run.
        """
        run = self._runs.get(run_id)
        if run is not None:
            run.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await run.done.wait()
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                if await self.store.cancel_waiting(run_id):  # paused for approval: nobody drives it, end it here
                    return True
                requested = await self.store.request_cancel(run_id)
        except TimeoutError:
            raise StoreUnavailable("the run store did not answer in time", retry_after=1.0) from None
        if not requested:
            return False
        # Asked: the owner stops it. Waiting to see its end is a courtesy the store may not be able to pay.
        with contextlib.suppress(Exception):
            async with asyncio.timeout_at(deadline):
                await self._wait_finished(run_id)
        return True

    async def cancel_conversation(self, user_id: str, conversation_id: str, *, timeout: float = 10.0) -> int:
        """Stop every run of a conversation (when it is deleted); how many were asked to stop.

        The runs this instance drives, and the conversation's latest run elsewhere when the store's chat index
        knows it (a useChat chat id is its conversation id). Returns when they have ended, or after ``timeout``.
        """
        run_ids = [
            run_id
            for run_id, run in self._runs.items()
            if run.info.user_id == user_id and run.info.conversation_id == conversation_id
        ]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                latest = await self.store.chat_run_index().get(user_id, conversation_id)
                if latest is not None and latest not in run_ids:
                    info = await self.store.get(latest)
                    if info is not None and (info.user_id, info.conversation_id) == (user_id, conversation_id):
                        run_ids.append(latest)
        results = await asyncio.gather(
            *(self.cancel(run_id, timeout=timeout) for run_id in run_ids), return_exceptions=True
        )
        return sum(1 for r in results if r is True)

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

    async def wait(self, run_id: str) -> None:
        """Wait until a run driven here has recorded its end (at once if it is not driven here)."""
        run = self._runs.get(run_id)
        if run is not None:
            await run.done.wait()

    async def shutdown(self, grace_s: float = 0.0) -> None:
        """Refuse new runs, give the running ones ``grace_s`` seconds to end by themselves, then end each one left
        with a retryable ``shutdown`` error and its finish (its partial answer saved); returns when every run has
        recorded its end (a backend that ignores its cancel holds that up until it lets go). New runs are refused
        (``RunLimitError``, answered 503) from the first moment."""
        self._closing = True
        if grace_s > 0 and self._runs:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    for run in list(self._runs.values()):
                        await run.done.wait()
        runs = list(self._runs.values())
        if runs:
            log.info("shutting down: ending %d running run(s)", len(runs))
        error = ErrorEvent("shutdown", "the server is shutting down", retryable=True)
        for run in runs:
            run.stop(error)
        for run in runs:
            await run.done.wait()

    async def subscribe(self, run_id: str, after: int = 0) -> Subscription:
        """Follow a run from ``after``: batches of events (coalesced), heartbeats while it is silent.

        The subscription counts as a viewer from this call until ``aclose()`` — even if it is never iterated, which
        is what happens when a client disconnects before the first byte. ``RunNotFound`` if there is no such run.
        """
        return await self.subscriptions.subscribe(run_id, after)

    # StoreListener: what other instances ask of the runs this one drives.

    def cancel_requested(self, run_id: str) -> None:
        """Another instance asked to stop a run driven here."""
        run = self._runs.get(run_id)
        if run is not None:
            log.debug("run %s: cancel requested by another instance", run_id)
            run.cancel()

    def run_lost(self, run_id: str) -> None:
        """Another instance ended a run driven here (it took this one for dead): stop it, record nothing."""
        run = self._runs.get(run_id)
        if run is not None and not run.ended:
            log.warning("run %s: ended by another instance (this one was taken for dead); stopping", run_id)
            run.lose()

    def viewers_gone(self, run_id: str) -> None:
        """The last viewer of a run driven here left, on another instance."""
        run = self._runs.get(run_id)
        if run is not None:
            self.subscriptions.viewers_gone(run)

    async def run_interrupted(self, info: RunInfo, events: Sequence[StoredEvent]) -> None:
        """This instance ended a run nobody drove (its owner died, or it waited for approval and expired or was
        stopped): save what it had said, as the owner would have."""
        if _ended_waiting(events):
            self.waits_ended += 1
        if self.on_finish is not None:
            transcript = Transcript.of_log(e.event for e in events)
            # The log's own finish when it has one (an expiry, a Stop while it waited); else it was cut: an error.
            await self._driver.report(transcript.outcome(info, reason=None if transcript.finished else "error"))


def _ended_waiting(events: Sequence[StoredEvent]) -> bool:
    """Whether a log ended by :meth:`RunManager.run_interrupted` was waiting for approval: its pause is the last
    thing it says before its ending (an error, a finish)."""
    said = (e.event for e in reversed(events) if not isinstance(e.event, ErrorEvent | FinishEvent))
    return type(next(said, None)) is RunPaused
