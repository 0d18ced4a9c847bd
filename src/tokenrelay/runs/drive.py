"""The drive: a run's own task, from the backend's first event to the run's recorded end.

Every run ends, whatever fails. A backend that fails ends the run with an error event. A store that refuses an
append is tried again with backoff for ``append_retry_s`` seconds (a Redis stall, a failover); past that the run is
ended here: its answer so far is saved, the store is given the ending if it takes it, and this instance's viewers
are handed the ending either way (:attr:`~tokenrelay.runs.state.Run.ending`). Saving the answer is bounded by
``save_timeout_s``; when it fails the finish event says so (``saved=False``).

A backend that yields a :class:`~tokenrelay.backends.base.Suspend` after its approval requests pauses the run: the
store appends the pause and keeps the suspension (the run is ``waiting``, owned by nobody), the answer so far is
saved with it (a :class:`~tokenrelay.messages.PausedPart` last), and the task ends with no finish event and nothing
held. :meth:`Driver.resume` goes on with the same run, on whichever instance won the last answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from tokenrelay.backends.base import ApprovalDecision, Backend, GenerateOptions, Resumable, Suspend
from tokenrelay.errors import BackendError, RunClosedError, RunFinishedError, RunNotFound, StoreUnavailable
from tokenrelay.events import ErrorEvent, Event, FinishEvent, StoredEvent, TextDelta
from tokenrelay.messages import Message, PausedPart
from tokenrelay.runs.base import COMPACT_EVERY, RunOutcome, Transcript
from tokenrelay.runs.state import Run
from tokenrelay.stores.base import RunStore, Suspension

__all__ = ["Driver", "StoreFailed"]

log = logging.getLogger("tokenrelay.runs")

QUESTION_WAIT_S = 2.0
"""The longest a run's first event waits for its question to be stored (``RunManager.start(after=)``)."""

_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 1.0
_ATTEMPT_TIMEOUT_S = 5.0  # one append that does not return in this long counts as failed
_SUSPEND_TIMEOUT_S = 15.0  # the store's pause (its events written first) in this long, or the run fails

Opener = Callable[[], AsyncGenerator[Event | Suspend, None]]


class StoreFailed(Exception):
    """The store would not take a run's events within the time allowed (or no longer has the run)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.retry_after = cause.retry_after if isinstance(cause, StoreUnavailable) else 1.0


def _store_error(exc: StoreFailed) -> ErrorEvent:
    return ErrorEvent(
        "store_unavailable", f"the run store failed ({exc}); the answer so far is kept", True, exc.retry_after
    )


class Driver:
    """Pumps a backend into the store for each run and records each run's end (history, then the finish)."""

    def __init__(
        self,
        backend: Backend,
        store: RunStore,
        runs: MutableMapping[str, Run],
        *,
        on_finish: Callable[[RunOutcome], Awaitable[None]] | None,
        append_retry_s: float,
        save_timeout_s: float,
        approval_expiry_s: float = 24 * 3600.0,
    ) -> None:
        self.backend = backend
        self.approval_expiry_s = approval_expiry_s
        self.store = store
        self.on_finish = on_finish
        self.append_retry_s = append_retry_s
        self.save_timeout_s = save_timeout_s
        # How long a run's first event waits for its question's write: a history that stalls holds the answer back
        # only so long (the answer's own save, before the done frame, still waits for it).
        self.question_wait_s = min(save_timeout_s, QUESTION_WAIT_S)
        # One store call that takes longer than this counts as failed (never longer than the whole retry budget).
        self.attempt_timeout_s = min(_ATTEMPT_TIMEOUT_S, max(append_retry_s, 0.1))
        self._runs = runs

    async def drive(self, run: Run, messages: list[Message], options: GenerateOptions) -> None:
        """The run's task: the backend's events into the store, then the run's end, recorded whatever happens."""
        await self._go(run, lambda: self.backend.stream(messages, options), Transcript())

    async def resume(self, run: Run, suspension: Suspension, decisions: Sequence[ApprovalDecision]) -> None:
        """A paused run's task once its approvals are all answered: the backend goes on from the suspension's
        state, under the run's next ids; the answer saved at the end is the whole of it, pause included."""
        backend = self.backend
        try:
            earlier = await self._log(run.info.run_id)
        except Exception:
            log.exception("run %s: its log could not be read to resume it", run.info.run_id)
            earlier = []
        transcript = Transcript.of_log(item.event for item in earlier)

        def opener() -> AsyncGenerator[Event | Suspend, None]:
            if not isinstance(backend, Resumable) or suspension.backend != backend.name:
                message = f"backend {backend.name!r} cannot go on with a run paused by {suspension.backend!r}"
                raise BackendError("cannot_resume", message)
            return backend.resume(suspension.state, decisions)

        await self._go(run, opener, transcript)

    async def _log(self, run_id: str) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        while batch := await self.store.read(run_id, out[-1].seq if out else 0, 0):
            out.extend(batch)
        return out

    async def _go(self, run: Run, opener: Opener, transcript: Transcript) -> None:
        suspended: Suspend | None = None
        try:
            suspended = await self._pump(run, opener, transcript)
        finally:
            if suspended is None or not await self._pause(run, transcript, suspended):
                await self._record_end(run, transcript)

    async def _pause(self, run: Run, transcript: Transcript, suspend: Suspend) -> bool:
        """Park the run in the store and its answer so far in history; ``False`` when it could not be (the run
        then ends with the error, recorded by the caller)."""
        run.finishing()
        run_id = run.info.run_id
        if not transcript.requests or transcript.finished:
            message = "the backend paused with no tool call waiting for approval"
            await self._fail(run, transcript, ErrorEvent("internal_error", message, False))
            return False
        expires_at = time.time() + self.approval_expiry_s
        suspension = Suspension(suspend.state, self.backend.name, expires_at, tuple(transcript.requests))
        try:
            async with asyncio.timeout(_SUSPEND_TIMEOUT_S):
                seq = await self.store.suspend(run_id, suspension)
        except Exception as exc:
            log.error("run %s: the store would not keep its pause (%r); ending it", run_id, exc)
            message = f"the run could not be paused for approval ({type(exc).__name__})"
            await self._fail(run, transcript, ErrorEvent("store_unavailable", message, True, 1.0))
            return False
        try:
            outcome = transcript.outcome(run.info)
            outcome.parts = (*outcome.parts, PausedPart(suspend.state, self.backend.name, expires_at, seq))
            await self.report(outcome)
        finally:
            run.info.status = "waiting"
            self._runs.pop(run_id, None)
            run.watch.ended(transcript, lost=False, paused=True)
            run.end()
        log.info("run %s: paused for %d approval(s)", run_id, len(suspension.calls))
        return True

    async def report(self, outcome: RunOutcome) -> bool:
        """Hand ``outcome`` to ``on_finish`` (bounded by ``save_timeout_s``); whether it was saved."""
        if self.on_finish is None:
            return True
        try:
            async with asyncio.timeout(self.save_timeout_s):
                await self.on_finish(outcome)
        except TimeoutError:
            log.error("run %s: saving the outcome took over %.0fs; given up", outcome.run_id, self.save_timeout_s)
            return False
        except Exception:
            log.exception("run %s: saving the outcome failed", outcome.run_id)
            return False
        return True

    async def _pump(self, run: Run, opener: Opener, transcript: Transcript) -> Suspend | None:
        """Backend → store, until the backend ends, fails, suspends (returned) or the run is stopped; a failure is
        recorded as an error."""
        run_id = run.info.run_id
        try:
            if not run.begin():
                raise asyncio.CancelledError  # cancelled (or lost) before its first step
            stream = opener()
            try:
                suspended = await self._feed(run, stream, transcript)
            finally:
                # Closing the backend's iterator is what stops its upstream work (HTTP response, sampler).
                await stream.aclose()
            if suspended is not None:
                return suspended
            transcript.backend_ended()
        except asyncio.CancelledError:
            await self._stopped(run, transcript)
        except RunClosedError:
            run.finishing()
            run.lose()
            log.warning("run %s: ended by another instance (this one was taken for dead); stopping", run_id)
        except StoreFailed as exc:
            run.finishing()
            log.error("run %s: the store would not take its events (%s); ending it here", run_id, exc)
            error = _store_error(exc)
            transcript.stopped("error", error)
            run.ending.append(error)
        except BackendError as exc:
            run.finishing()
            await self._fail(run, transcript, ErrorEvent(exc.code, exc.message, exc.retryable, exc.retry_after))
        except Exception as exc:
            run.finishing()
            log.exception("run %s: backend %s failed", run_id, self.backend.name)
            await self._fail(run, transcript, ErrorEvent("internal_error", f"{type(exc).__name__}: {exc}", False))
        return None

    async def _feed(
        self, run: Run, stream: AsyncGenerator[Event | Suspend, None], transcript: Transcript
    ) -> Suspend | None:
        """The backend's events into the store, noted in ``transcript``; the backend's suspension, if it ends so."""
        run_id = run.info.run_id
        texts, append = transcript.texts, self.store.append
        compact_at = COMPACT_EVERY
        after = run.after
        async for event in stream:
            if after is not None:  # the first event: stored once the question is (RunManager.start)
                await self._settle(run, after)
                after = None
            # A text delta (nearly every event) is noted inline: a call per token shows in the throughput.
            if type(event) is TextDelta and not transcript.finished:
                if not texts:
                    run.watch.first_token()
                texts.append(event.text)
                if len(texts) >= compact_at:
                    compact_at = transcript.compact()
            elif isinstance(event, Suspend):
                return event  # the backend's last item: it goes on later, from its state
            elif not transcript.take(event):
                continue
            try:
                await append(run_id, (event,))
            except RunClosedError:
                raise
            except Exception as exc:
                await self._append_retrying(run_id, (event,), exc, self.append_retry_s)
        return None

    async def _settle(self, run: Run, after: asyncio.Future[Any]) -> None:
        """Wait (boundedly) for what the run's first event waits for; its failure is not the run's."""
        run.after = None
        done, _ = await asyncio.wait([after], timeout=self.question_wait_s)
        if not done:
            why = "its question was not stored in %.1fs; the answer goes on"
            log.warning("run %s: " + why, run.info.run_id, self.question_wait_s)

    async def _stopped(self, run: Run, transcript: Transcript) -> None:
        """The run's task was cancelled: by a cancel (the run ends as cancelled) or a stop with an error."""
        run.finishing()
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancel was ours, and is handled: the task goes on to record the end
        if run.stop_error is not None and not run.lost:
            await self._fail(run, transcript, run.stop_error)
        else:
            transcript.stopped("cancelled")

    async def _fail(self, run: Run, transcript: Transcript, error: ErrorEvent) -> None:
        transcript.stopped("error", error)
        await self._record(run, [error], self.append_retry_s)

    async def _record_end(self, run: Run, transcript: Transcript) -> None:
        """History, then the finish event, then the store is told; ``done`` is set whatever fails."""
        run.finishing()
        run_id = run.info.run_id
        try:
            # Decided here, once: a run lost before now records nothing (the instance that ended it has).
            if not run.lost:
                # History first, then the finish event: a client that saw "done" and sends a follow-up at once
                # must find this answer in the conversation.
                saved = await self.report(transcript.outcome(run.info))
                finish = FinishEvent(transcript.reason, saved=None if saved else False)
                # After a store failure the ending goes with the error the store did not take, and is tried once.
                pending, run.ending = [*run.ending, finish], []
                await self._record(run, pending, self.append_retry_s if len(pending) == 1 else 0.0)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.attempt_timeout_s):
                    await self.store.finish(run_id)
        finally:
            run.info.status = "finished"
            self._runs.pop(run_id, None)
            run.watch.ended(transcript, lost=run.lost)
            run.end()

    async def _record(self, run: Run, events: list[Event], budget_s: float) -> None:
        """Append ``events`` (retrying for ``budget_s``); what the store will not take becomes the run's ending
        here, so this instance's viewers still see it."""
        run_id = run.info.run_id
        if run.ending:  # the store failed already: what follows the events it did not take waits with them
            run.ending.extend(events)
            return
        try:
            await self._append_bounded(run_id, events, budget_s)
        except RunClosedError:
            log.debug("run %s: already ended elsewhere, %s not recorded", run_id, events[-1].type)
        except StoreFailed as exc:
            log.error("run %s: could not record %s (%s); ending it here", run_id, events[-1].type, exc)
            run.ending.extend(events)

    async def _append_bounded(self, run_id: str, events: Sequence[Event], budget_s: float) -> None:
        """One append, bounded in time, then retries for ``budget_s``; ``StoreFailed`` when the store would not."""
        try:
            async with asyncio.timeout(self.attempt_timeout_s):
                await self.store.append(run_id, events)
        except RunClosedError:
            raise
        except Exception as exc:  # TimeoutError included: a stalled store is a failing one
            if budget_s <= 0:
                raise StoreFailed(exc) from exc
            await self._append_retrying(run_id, events, exc, budget_s)

    async def _append_retrying(
        self, run_id: str, events: Sequence[Event], first: BaseException, budget_s: float
    ) -> None:
        """The first append of ``events`` failed with ``first``: try again with backoff for ``budget_s`` seconds.

        ``StoreFailed`` when the time is up, or at once when the store no longer has the run.
        """
        if isinstance(first, RunNotFound | RunFinishedError):
            raise StoreFailed(first) from first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        delay, failure = _FIRST_DELAY_S, first
        log.warning("run %s: the store refused an append (%s); trying again for %.0fs", run_id, first, budget_s)
        while loop.time() + delay < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)
            try:
                async with asyncio.timeout(min(self.attempt_timeout_s, max(deadline - loop.time(), 0.01))):
                    await self.store.append(run_id, events)
                return
            except RunClosedError:
                raise
            except (RunNotFound, RunFinishedError) as exc:
                raise StoreFailed(exc) from exc
            except Exception as exc:
                failure = exc
        raise StoreFailed(failure) from failure
