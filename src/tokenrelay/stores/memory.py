"""The in-process run store: fast, bounded, for a single instance."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tokenrelay.events import Event
from tokenrelay.stores.base import RunInfo, StoredEvent, StoreListener

__all__ = ["MemoryRunStore"]


@dataclass(slots=True)
class _Log:
    info: RunInfo
    events: list[Event] = field(default_factory=list)
    viewers: int = 0
    # Readers waiting for the next append. A bare future per waiter (with a call_later timeout) is much cheaper
    # than asyncio.wait_for, which wraps every wait in a task: this path runs once per event per subscriber.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


def _wake_one(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemoryRunStore:
    """Keeps every run's events in memory.

    Bounded: a finished run is kept ``ttl_s`` seconds (for late readers and resumes) and at most ``max_finished``
    finished runs are kept at all; the oldest go first. Running runs are never evicted — the run manager caps how
    many may run at once.
    """

    def __init__(self, *, ttl_s: float = 600.0, max_finished: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_finished = max_finished
        self._logs: dict[str, _Log] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()  # run_id -> expiry, oldest first

    async def start(self) -> None:
        return None

    def attach(self, listener: StoreListener) -> None:
        # One instance: every run is driven here, so there is nobody else to hear from.
        return None

    async def create(self, info: RunInfo) -> None:
        self._expire()
        if info.run_id in self._logs:
            raise ValueError(f"run {info.run_id} exists")
        self._logs[info.run_id] = _Log(info)

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        log = self._logs[run_id]
        if log.info.status != "running":
            raise ValueError(f"run {run_id} is finished")
        log.events.extend(events)
        log.info.last_seq = len(log.events)
        log.wake()
        return log.info.last_seq

    async def finish(self, run_id: str) -> None:
        log = self._logs.get(run_id)
        if log is None or log.info.status == "finished":
            return
        now = time.time()
        log.info.status = "finished"
        log.info.finished_at = now
        self._finished[run_id] = now + self.ttl_s
        log.wake()
        self._expire()

    async def get(self, run_id: str) -> RunInfo | None:
        log = self._logs.get(run_id)
        return log.info if log is not None else None

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        log = self._logs.get(run_id)
        if log is None:
            return []
        if len(log.events) <= after and log.info.status == "running" and timeout != 0:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            log.waiters.append(fut)
            handle = loop.call_later(timeout, _wake_one, fut) if timeout is not None else None
            try:
                await fut
            finally:
                if handle is not None:
                    handle.cancel()
        events = log.events
        return [StoredEvent(seq, events[seq - 1]) for seq in range(after + 1, len(events) + 1)]

    async def add_viewer(self, run_id: str) -> int:
        log = self._logs.get(run_id)
        if log is None:
            return 0
        log.viewers += 1
        return log.viewers

    async def remove_viewer(self, run_id: str) -> int:
        log = self._logs.get(run_id)
        if log is None:
            return 0
        log.viewers = max(0, log.viewers - 1)
        return log.viewers

    async def viewers(self, run_id: str) -> int:
        log = self._logs.get(run_id)
        return log.viewers if log is not None else 0

    async def request_cancel(self, run_id: str) -> bool:
        return False  # every run of this store is driven by this instance's manager, which cancels it directly

    async def close(self) -> None:
        for log in self._logs.values():
            log.wake()

    def __len__(self) -> int:
        return len(self._logs)

    def _expire(self) -> None:
        now = time.time()
        while self._finished:
            run_id, expiry = next(iter(self._finished.items()))
            if expiry > now and len(self._finished) <= self.max_finished:
                break
            del self._finished[run_id]
            self._logs.pop(run_id, None)
