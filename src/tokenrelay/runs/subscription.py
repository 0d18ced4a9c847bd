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
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from typing import Any

from tokenrelay.coalescing import Coalescer
from tokenrelay.errors import RunNotFound
from tokenrelay.events import FinishEvent, StoredEvent, TextDelta
from tokenrelay.runs.base import HEARTBEAT, DisconnectPolicy, Heartbeat
from tokenrelay.runs.state import Run
from tokenrelay.stores.base import RunStore

__all__ = ["Subscription", "Subscriptions"]

log = logging.getLogger("tokenrelay.runs")

Batch = list[StoredEvent] | Heartbeat


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

    async def _follow(self, run_id: str, after: int) -> AsyncGenerator[Batch, None]:
        loop = asyncio.get_running_loop()
        store = self.store
        coalescer = self.coalescer
        last_write = -math.inf  # the first delta is never held
        cursor = after
        started = loop.time()
        # Time to first token is a new stream's: a resume (after > 0) has had its first token already.
        observe_first_token = self.first_token_observer if after == 0 else None
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
                    if observe_first_token is not None:
                        observe_first_token(last_write - started)
                        observe_first_token = None
                if type(batch[-1].event) is FinishEvent:
                    return
        finally:
            coalescer.stream_ended()

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
