"""The viewing side of runs: following a run from a cursor, counting its viewers, and what happens when the last
one leaves (the disconnect policy).

Viewers are counted in the store, so the count is global when the store is shared; the policy is applied only by
the instance that drives the run, against that global count, so a viewer who left instance B while another still
watches on C cancels nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from typing import Any

from tokenrelay.coalescing import Coalescer
from tokenrelay.errors import RunNotFound, StoreUnavailable
from tokenrelay.events import ErrorEvent, Event, FinishEvent, StoredEvent, TextDelta
from tokenrelay.runs.base import HEARTBEAT, DisconnectPolicy, Heartbeat
from tokenrelay.runs.state import Run
from tokenrelay.stores.base import RunInfo, RunStore

__all__ = ["Subscription", "Subscriptions"]

log = logging.getLogger("tokenrelay.runs")

Batch = list[StoredEvent] | Heartbeat

_LOST = ErrorEvent("run_lost", "the run store no longer has this run", retryable=True)
_UNFINISHED = ErrorEvent("run_unfinished", "the run ended without its last events being recorded", retryable=True)


def local_ending(cursor: int, events: Sequence[Event]) -> list[StoredEvent]:
    """Events the store does not have, handed to a viewer under its own cursor: a resume from their id asks the
    store for exactly what follows what it has seen."""
    return [StoredEvent(cursor, event) for event in events]


def unreadable(cursor: int, run: Run | None, exc: Exception) -> list[StoredEvent]:
    """The end of a stream whose store cannot be read: a retryable error (resuming later, or on another instance,
    can work) and the finish."""
    if run is not None and run.ending:
        return local_ending(cursor, run.ending)
    retry_after = exc.retry_after if isinstance(exc, StoreUnavailable) else 1.0
    message = f"the run store cannot be read ({type(exc).__name__}); resume later"
    return local_ending(cursor, [ErrorEvent("store_unavailable", message, True, retry_after), FinishEvent("error")])


def _text_deltas(batch: list[StoredEvent], cursor: int) -> int:
    """The text deltas in a batch read after ``cursor``: every id it advances by, but for events that are not text
    (a coalesced delta stands for every id it spans)."""
    tokens = batch[-1].seq - cursor
    for item in batch:
        if type(item.event) is not TextDelta:
            tokens -= 1
    return tokens


class Subscription:
    """An async iterator over a run's events for one viewer; ``aclose()`` it when the viewer leaves."""

    __slots__ = ("_closed", "_counted", "_gen", "_owner", "_run", "_run_id")

    def __init__(
        self,
        owner: Subscriptions,
        run_id: str,
        run: Run | None,
        gen: AsyncGenerator[Batch, None],
        *,
        counted: bool,
    ) -> None:
        self._owner = owner
        self._run_id = run_id
        self._run = run  # the run, when this instance drives it
        self._gen = gen
        self._counted = counted  # whether it was counted as a viewer in the store (only while the run was running)
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Batch:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop following; the viewer counts as gone (which may apply the disconnect policy)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._gen.aclose()
        finally:
            await self._owner.leave(self._run_id, self._run, counted=self._counted)


class Subscriptions:
    """The subscriptions of one run manager, and its disconnect policy.

    ``on_disconnect`` is what happens when a run's last subscriber leaves: ``"cancel"`` stops the backend at once;
    ``"detach"`` lets the run go on for ``detach_grace_s`` seconds so the client can resume, and cancels it if
    nobody has come back by then. ``runs`` is the manager's table of the runs it drives (read only here).
    """

    def __init__(
        self,
        store: RunStore,
        runs: Mapping[str, Run],
        coalescer: Coalescer,
        *,
        heartbeat_s: float,
        on_disconnect: DisconnectPolicy,
        detach_grace_s: float,
    ) -> None:
        self.store = store
        self.coalescer = coalescer
        self.heartbeat_s = heartbeat_s
        self.on_disconnect = on_disconnect
        self.detach_grace_s = detach_grace_s
        # For metrics, kept cheap: a count added to once per write, one call per new stream.
        self.tokens_out = 0  # text deltas written to streams
        self.first_token_observer: Callable[[float], None] | None = None  # seconds from a stream's start
        self._runs = runs
        self._chores: set[asyncio.Task[None]] = set()  # small background checks, kept so they are not collected

    async def subscribe(self, run_id: str, after: int) -> Subscription:
        """See :meth:`tokenrelay.runs.RunManager.subscribe`."""
        info = await self.store.get(run_id)
        if info is None:
            raise RunNotFound(run_id)
        counted = info.status == "running"
        if counted:
            await self.store.add_viewer(run_id)  # first: a store that fails here leaves no count behind
        run = self._runs.get(run_id)
        if run is not None:
            run.subscribers += 1
            if run.detach_timer is not None:
                run.detach_timer.cancel()
                run.detach_timer = None
        return Subscription(self, run_id, run, self._follow(run_id, run, after), counted=counted)

    async def leave(self, run_id: str, run: Run | None, *, counted: bool) -> None:
        """A subscription closed: count the viewer out and, if it was the last one, apply the policy."""
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
        if remaining == 0 and run is not None and not run.ended:
            self._last_subscriber_left(run)

    def viewers_gone(self, run: Run) -> None:
        """The store saw the last viewer of ``run`` (driven here) leave on another instance."""
        if not run.ended:
            self._chore(self._apply_policy_if_unwatched(run))

    async def _follow(self, run_id: str, run: Run | None, after: int) -> AsyncGenerator[Batch, None]:
        loop = asyncio.get_running_loop()
        store = self.store
        coalescer = self.coalescer
        heartbeat_s = self.heartbeat_s
        last_write = -math.inf  # the first delta is never held
        cursor = after
        started = last_sent = loop.time()
        # Time to first token is a new stream's: a resume (after > 0) has had its first token already.
        observe_first_token = self.first_token_observer if after == 0 else None
        coalescer.stream_started()
        try:
            while True:
                # Deltas that come within the window of the last write wait for its end and go out together.
                until = last_write + coalescer.window_s
                now = loop.time()
                if until > now:
                    await coalescer.sleep_until(until)
                # Waits until the next heartbeat is due (a tenth of the interval at least): a read woken by events
                # not past the cursor (a client's cursor ahead of the log) must not make each one a heartbeat.
                timeout = max(last_sent + heartbeat_s - now, heartbeat_s / 10)
                try:
                    batch = await store.read_coalesced(run_id, cursor, timeout)
                    info = None if batch else await store.get(run_id)
                except Exception as exc:
                    log.warning("run %s: the store could not be read (%s); ending this stream", run_id, exc)
                    yield unreadable(cursor, run, exc)
                    return
                if not batch:
                    if info is None or info.status == "finished" or (run is not None and run.ending):
                        ending = await self._ending(run_id, run, cursor, info)
                        if ending:
                            yield ending
                        return
                    if loop.time() - last_sent >= heartbeat_s * 0.99:
                        last_sent = loop.time()
                        yield HEARTBEAT
                    continue
                tokens = _text_deltas(batch, cursor)
                cursor = batch[-1].seq
                yield batch
                last_write = last_sent = loop.time()
                if tokens:
                    self.tokens_out += tokens
                    if observe_first_token is not None:
                        observe_first_token(last_write - started)
                        observe_first_token = None
                if type(batch[-1].event) is FinishEvent:
                    return
        finally:
            coalescer.stream_ended()

    async def _ending(self, run_id: str, run: Run | None, cursor: int, info: RunInfo | None) -> list[StoredEvent]:
        """The store has no more events for a run that is over: what still has to reach the viewer so that its
        stream ends with a finish (nothing when it has had the finish already)."""
        if run is not None and run.ending:
            return local_ending(cursor, run.ending)  # the store failed: the run's own ending, kept here
        if info is None:
            return local_ending(cursor, [_LOST, FinishEvent("error")])
        last = await self.store.read(run_id, max(info.last_seq - 1, 0), 0) if info.last_seq else []
        if last and type(last[-1].event) is FinishEvent:
            # A cursor at the finish has had it. One past the end of the log is not a place in it: the client is
            # given the finish, the one thing a stream must end with.
            return [] if cursor == last[-1].seq else [StoredEvent(cursor, last[-1].event)]
        # Finished without a finish event: ended where its finish could not be written.
        return local_ending(cursor, [_UNFINISHED, FinishEvent("error")])

    def _last_subscriber_left(self, run: Run) -> None:
        if self.on_disconnect == "cancel":
            log.debug("run %s: last subscriber left, cancelling", run.info.run_id)
            run.cancel()
        elif run.detach_timer is None:

            def expire() -> None:
                run.detach_timer = None
                if run.subscribers == 0 and not run.ended:
                    # Somebody may have come back on another instance: ask the store before cancelling.
                    self._chore(self._cancel_if_unwatched(run))

            run.detach_timer = asyncio.get_running_loop().call_later(self.detach_grace_s, expire)

    async def _cancel_if_unwatched(self, run: Run) -> None:
        try:
            watched = await self.store.viewers(run.info.run_id) > 0
        except Exception:
            watched = False  # the store is unreachable: nobody can be reading the run anyway
        if not watched and not run.ended:
            log.debug("run %s: nobody came back in %.0fs, cancelling", run.info.run_id, self.detach_grace_s)
            run.cancel()

    async def _apply_policy_if_unwatched(self, run: Run) -> None:
        try:
            watched = await self.store.viewers(run.info.run_id) > 0
        except Exception:
            log.exception("run %s: could not count its viewers", run.info.run_id)
            return
        if not watched and not run.ended:
            self._last_subscriber_left(run)

    def _chore(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
