"""Liveness: each instance's keep-alive mark, and how the others end the runs of an instance that died.

``P instance:<iid>`` is set with ``PX liveness_s`` and refreshed three times per period. When a followed stream has
been quiet for a third of ``liveness_s``, the tail reader asks here whether its owner is alive (one ``EXISTS`` per
owner for all its quiet streams); when the owner's mark has expired, the ``INTERRUPT`` script appends
``ErrorEvent("interrupted", retryable=True)`` and ``FinishEvent("error")`` and marks the run finished, atomically and
only if it is still running. So exactly one instance ends the run and every reader everywhere sees the same ending;
that instance also saves the partial answer to the history (``StoreListener.run_interrupted``).

If the presumed-dead owner was only partitioned, its next append fails with ``RunClosedError``; and when it can
refresh its mark again it finds its runs ended elsewhere and stops driving them.

Not every missing mark is a death. An instance that could not reach Redis itself a moment ago judges nobody for a
liveness period (a Redis pause silences every instance at once, and their marks expire together). And a run whose
keys are gone (Redis restarted empty) is left to its owner while the owner's mark is alive: the owner restores its
keys. Only when they stay gone, or the owner is gone too, are its readers here given a retryable ``run_lost`` error
and a finish (locally: there is nothing left in Redis to end).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tokenrelay.events import ErrorEvent, Event, FinishEvent, StoredEvent
from tokenrelay.stores.base import StoreListener
from tokenrelay.stores.redis.cluster import UNREACHABLE, Client
from tokenrelay.stores.redis.layout import Keys, decode, dump_event
from tokenrelay.stores.redis.logs import RunLog
from tokenrelay.stores.redis.scripts import INTERRUPT
from tokenrelay.stores.redis.writer import Writer

__all__ = ["Liveness", "end_locally"]

logger = logging.getLogger("tokenrelay.stores.redis")

_LOST = ErrorEvent("run_lost", "Redis lost this run (it restarted empty); ask again", retryable=True)


class Liveness:
    """This instance's mark (:meth:`keep_alive`); ending dead instances' runs (:meth:`end_runs_of_dead_owners`)."""

    def __init__(
        self, client: Client, keys: Keys, instance_id: str, writer: Writer, *, liveness_s: float, ttl_s: float
    ) -> None:
        self.listener: StoreListener | None = None
        self._redis = client
        self._keys = keys
        self._instance_id = instance_id
        self._writer = writer
        self._liveness_s = liveness_s
        self._ttl_ms = int(ttl_s * 1000)
        self._interrupt = client.register_script(INTERRUPT)
        self._calm_from = 0.0  # monotonic time from which this instance may take others for dead

    def trouble(self) -> None:
        """This instance could not reach Redis: neither could the others, so judge nobody for a while."""
        self._calm_from = time.monotonic() + self._liveness_s

    async def keep_alive(self, each_beat: Callable[[], None]) -> None:
        """Refresh the mark three times per period, for ever; call ``each_beat`` after each refresh."""
        while True:
            await asyncio.sleep(self._liveness_s / 3)
            try:
                await self.refresh()
            except UNREACHABLE as exc:
                logger.warning("cannot refresh this instance's liveness in Redis: %s", exc)
                self.trouble()
            each_beat()

    async def refresh(self) -> None:
        """Renew this instance's mark; when it had expired, stop driving the runs other instances ended meanwhile."""
        key = self._keys.instance(self._instance_id)
        ttl = int(self._liveness_s * 1000)
        if await self._redis.set(key, b"1", px=ttl, xx=True):
            return
        # The mark had expired (a first start, Redis restarted empty, or this instance was silent too long and may
        # have been taken for dead): set it again, and have the writer check every run it drives — restoring the
        # keys Redis lost, abandoning the runs another instance ended meanwhile.
        await self._redis.set(key, b"1", px=ttl)
        self._writer.recheck_all()

    async def end_runs_of_dead_owners(self, logs: list[RunLog], now: float) -> None:
        """These followed streams were quiet: end the runs whose owner is dead, and let go of expired ones."""
        owners = sorted({lg.owner for lg in logs})
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for owner in owners:
                    pipe.exists(self._keys.instance(owner))
                for lg in logs:
                    pipe.hmget(self._keys.meta(lg.info.run_id), ["status", "owner"])
                replies = await pipe.execute()
        except UNREACHABLE as exc:
            logger.warning("cannot check instances' liveness in Redis: %s", exc)
            self.trouble()
            return
        if now < self._calm_from:
            return  # Redis was unreachable a moment ago: a missing mark may be its owner's trouble as well
        alive = dict(zip(owners, replies[: len(owners)], strict=True))
        for lg, (status, owner) in zip(logs, replies[len(owners) :], strict=True):
            lg.checked = now
            if owner is not None and decode(owner) != lg.owner:
                lg.owner = decode(owner)  # a paused run resumed by another instance: judged by its new owner next time
                continue
            if status is None:
                self._keys_gone(lg, now, owner_alive=bool(alive[lg.owner]))
            else:
                lg.missing_since = 0.0
                if decode(status) == "running" and not alive[lg.owner]:
                    await self._end_as_interrupted(lg)

    def _keys_gone(self, lg: RunLog, now: float, *, owner_alive: bool) -> None:
        """A followed run's keys are gone. Its owner, alive, restores them (from its copy) within a liveness period
        or two; otherwise this instance's readers are given a retryable error and the finish."""
        if not lg.missing_since:
            lg.missing_since = now
        if owner_alive and now - lg.missing_since < 2 * self._liveness_s:
            return
        logger.warning("run %s: its keys are gone from Redis; ending it for this instance's readers", lg.info.run_id)
        end_locally(lg, _LOST)

    async def _end_as_interrupted(self, lg: RunLog) -> None:
        """The run's owner is dead: end the run (once, whoever is first) and, if this instance did, save it."""
        run_id = lg.info.run_id
        error = ErrorEvent("interrupted", "the instance running this answer stopped; ask again", retryable=True)
        last = await self._interrupt(
            keys=[self._keys.meta(run_id), self._keys.events(run_id)],
            args=[dump_event(error), dump_event(FinishEvent("error")), self._ttl_ms, repr(time.time())],
        )
        if last and self.listener is not None:
            logger.warning("run %s: its instance %s is gone; ended it as interrupted", run_id, lg.owner)
            events = [StoredEvent(i + 1, e) for i, e in enumerate(lg.events)]
            events += [StoredEvent(int(last) - 1, error), StoredEvent(int(last), FinishEvent("error"))]
            await self.listener.run_interrupted(lg.info, events)


def end_locally(lg: RunLog, error: ErrorEvent) -> None:
    """End a followed run for this instance's readers only (Redis cannot be told): ``error`` and a finish, under
    the id of the last event this copy has (:attr:`RunLog.ending`)."""
    ending: list[Event] = [error, FinishEvent("error")]
    lg.ending = ending
    lg.info.status = "finished"
    lg.info.finished_at = time.time()
    lg.wake()
