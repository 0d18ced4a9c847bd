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

from tokenrelay.backends.base import Backend, GenerateOptions
from tokenrelay.coalescing import Coalescer
from tokenrelay.errors import BackendError, RunClosedError, RunLimitError
from tokenrelay.events import ErrorEvent, Event, FinishEvent, TextDelta
from tokenrelay.messages import Message
from tokenrelay.runs.base import DisconnectPolicy, RunOutcome, Transcript, new_run_id
from tokenrelay.runs.state import Run
from tokenrelay.runs.subscription import Subscription, Subscriptions
from tokenrelay.stores.base import RunInfo, RunStore, StoredEvent

__all__ = ["RunManager"]

log = logging.getLogger("tokenrelay.runs")


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
        self.max_active_runs = max_active_runs
        self.coalescer = Coalescer(floor_s=coalesce_window_s, max_s=coalesce_max_s)
        self.on_finish = on_finish
        self._runs: dict[str, Run] = {}
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
    ) -> RunInfo:
        """Start a run on its own task and return its info (stored before the task starts).

        ``extra`` is kept in ``RunInfo.extra`` and handed back in ``RunOutcome.extra``.
        """
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
        run = Run(info)
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
        ended: Awaitable[object]
        if run is not None:
            run.cancel()
            ended = run.done.wait()
        elif await self.store.request_cancel(run_id):
            ended = self._wait_finished(run_id)
        else:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await ended
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

    async def wait(self, run_id: str) -> None:
        """Wait until a run driven here has recorded its end (at once if it is not driven here)."""
        run = self._runs.get(run_id)
        if run is not None:
            await run.done.wait()

    async def shutdown(self) -> None:
        """Cancel every run (recording partial answers) and wait for them to end."""
        runs = list(self._runs.values())
        for run in runs:
            run.cancel()
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
        """This instance ended a run whose owner died: save what it had said, as the owner would have."""
        if self.on_finish is not None:
            transcript = Transcript.of_log(e.event for e in events)
            await self._report(transcript.outcome(info, reason="error"))

    async def _report(self, outcome: RunOutcome) -> None:
        assert self.on_finish is not None
        try:
            await self.on_finish(outcome)
        except Exception:
            log.exception("run %s: saving the outcome failed", outcome.run_id)

    # The drive: the run's own task, from the backend's first event to the run's recorded end.

    async def _drive(self, run: Run, messages: list[Message], options: GenerateOptions) -> None:
        transcript = Transcript()
        try:
            await self._pump(run, messages, options, transcript)
        finally:
            await self._record_end(run, transcript)

    async def _pump(self, run: Run, messages: list[Message], options: GenerateOptions, transcript: Transcript) -> None:
        """Backend → store, until the backend ends, fails or the run is stopped; a failure is recorded as an error."""
        run_id = run.info.run_id
        try:
            if not run.begin():
                raise asyncio.CancelledError  # cancelled (or lost) before its first step
            stream = self.backend.stream(messages, options)
            try:
                texts, append = transcript.texts, self.store.append
                async for event in stream:
                    # A text delta (nearly every event) is noted inline: a call per token shows in the throughput.
                    if type(event) is TextDelta and not transcript.finished:
                        texts.append(event.text)
                    elif not transcript.take(event):
                        continue
                    await append(run_id, (event,))
            finally:
                # Closing the backend's iterator is what stops its upstream work (HTTP response, sampler).
                await stream.aclose()
            transcript.backend_ended()
        except asyncio.CancelledError:
            run.finishing()
            transcript.stopped("cancelled")
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the cancel was ours, and is handled: the task goes on to record the end
        except RunClosedError:
            run.finishing()
            run.lose()
            log.warning("run %s: ended by another instance (this one was taken for dead); stopping", run_id)
        except BackendError as exc:
            run.finishing()
            await self._fail(run_id, transcript, ErrorEvent(exc.code, exc.message, exc.retryable, exc.retry_after))
        except Exception as exc:
            run.finishing()
            log.exception("run %s: backend %s failed", run_id, self.backend.name)
            await self._fail(run_id, transcript, ErrorEvent("internal_error", f"{type(exc).__name__}: {exc}", False))

    async def _fail(self, run_id: str, transcript: Transcript, error: ErrorEvent) -> None:
        transcript.stopped("error", error)
        await self._append_quietly(run_id, error)

    async def _record_end(self, run: Run, transcript: Transcript) -> None:
        """History, then the finish event, then the store is told; ``done`` is set whatever fails."""
        run.finishing()
        run_id = run.info.run_id
        try:
            # Decided here, once: a run lost before now records nothing (the instance that ended it has).
            if not run.lost:
                # History first, then the finish event: a client that saw "done" and sends a follow-up at once
                # must find this answer in the conversation.
                if self.on_finish is not None:
                    await self._report(transcript.outcome(run.info))
                await self._append_quietly(run_id, FinishEvent(transcript.reason))
            with contextlib.suppress(Exception):
                await self.store.finish(run_id)
        finally:
            run.info.status = "finished"
            self._runs.pop(run_id, None)
            run.end()

    async def _append_quietly(self, run_id: str, event: Event) -> None:
        try:
            await self.store.append(run_id, (event,))
        except RunClosedError:
            log.debug("run %s: already ended elsewhere, %s not recorded", run_id, event.type)
        except Exception:
            log.exception("run %s: could not record %s", run_id, event.type)
