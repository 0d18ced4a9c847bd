"""The in-process run store: fast, bounded, for a single instance."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tokenrelay.errors import RunExistsError, RunFinishedError, RunNotFound
from tokenrelay.events import ErrorEvent, Event, FinishEvent, RunPaused, TextDelta, ToolApprovalResponse
from tokenrelay.stores.base import DecisionResult, RunInfo, StoredEvent, StoreListener, Suspension
from tokenrelay.stores.chat_runs import MemoryChatRunIndex
from tokenrelay.stores.memory_log import CHUNK, EventLog, Item

__all__ = ["MemoryRunStore", "expired_error"]

logger = logging.getLogger("tokenrelay.stores")


def expired_error() -> ErrorEvent:
    """The error a waiting run ends with when its approvals were not all answered in time."""
    return ErrorEvent("approval_expired", "the tool call was not approved in time", retryable=False)


@dataclass(slots=True)
class _Log:
    info: RunInfo
    # A text delta is kept as its bare text: a run keeps all its events (for resumes) and text deltas are nearly all
    # of them, so the 48-byte TextDelta wrapper would be most of what a long stream costs in memory. Reads rebuild it.
    # In chunks, the full ones of texts only kept joined (stores.memory_log).
    events: EventLog = field(default_factory=EventLog)
    viewers: int = 0
    # Readers waiting for the next append, with their deadlines. A bare future per waiter is much cheaper than
    # asyncio.wait_for (a task per wait), and the deadlines are enforced by one sweep timer per store rather than a
    # timer per read: this path runs once per write per subscriber.
    waiters: list[tuple[asyncio.Future[None], float]] = field(default_factory=list)
    # Approvals: what a waiting run goes on from, every answer it was given (kept, so that the same answer again is
    # one), and the timer that ends it when they do not all come in time.
    suspension: Suspension | None = None
    decisions: dict[str, ToolApprovalResponse] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None
    expired: bool = False

    def wake(self) -> None:
        if not self.waiters:
            return
        waiters, self.waiters = self.waiters, []
        for fut, _ in waiters:
            if not fut.done():
                fut.set_result(None)


def _stored(seq: int, item: Item) -> StoredEvent:
    return StoredEvent(seq, TextDelta(item) if isinstance(item, str) else item)


class MemoryRunStore:
    """Keeps every run's events in memory.

    Bounded: a finished run is kept ``ttl_s`` seconds (for late readers and resumes) and at most ``max_finished``
    finished runs are kept at all; the oldest go first. Running runs are never evicted — the run manager caps how
    many may run at once.
    """

    shared = False  # one instance: a run lives and ends in the process that drives it

    def __init__(self, *, ttl_s: float = 600.0, max_finished: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_finished = max_finished
        self._logs: dict[str, _Log] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()  # run_id -> expiry, oldest first
        self._waiting: dict[str, _Log] = {}  # logs that may have readers with a deadline
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self._slack = 0.25  # how late a deadline may be noticed: a tenth of the shortest timeout, at most 250 ms
        self._chat_runs = MemoryChatRunIndex()
        self._listener: StoreListener | None = None
        self._chores: set[asyncio.Task[None]] = set()

    async def check(self) -> None:
        return None

    async def start(self) -> None:
        return None

    def chat_run_index(self) -> MemoryChatRunIndex:
        """In process, like the runs: one instance is the only one that asks."""
        return self._chat_runs

    def attach(self, listener: StoreListener) -> None:
        # One instance: every run is driven here, so there is nobody else to hear from but the expiry of approvals.
        self._listener = listener

    async def create(self, info: RunInfo) -> None:
        """Keep a new run's log; ``RunExistsError`` if a run with its id is kept already."""
        self._expire()
        if info.run_id in self._logs:
            raise RunExistsError(f"run {info.run_id} exists")
        self._logs[info.run_id] = _Log(info)

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        """Append to a running run; ``RunNotFound`` for an unknown (or expired) run, ``RunFinishedError`` for a
        finished one."""
        log = self._logs.get(run_id)
        if log is None:
            raise RunNotFound(run_id)
        if log.info.status != "running":
            raise RunFinishedError(f"run {run_id} is finished")
        log_events = log.events
        tail = log_events.tail
        for event in events:
            tail.append(event.text if type(event) is TextDelta else event)
            if len(tail) >= CHUNK:
                log_events.seal()
                tail = log_events.tail
        log.info.last_seq = log_events.base + len(tail)
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
        if log is None:
            return None
        if log.suspension is not None and time.time() >= log.suspension.expires_at:
            await self._expire_waiting(log)  # noticed before its timer: ended now, whoever asks first
        return log.info

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        log = self._logs.get(run_id)
        if log is None:
            return []
        if len(log.events) <= after and log.info.status != "finished" and timeout != 0:
            await self._wait(run_id, log, timeout)
        return [_stored(seq, item) for seq, item in log.events.items(after)]

    async def read_coalesced(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        """``read``, with consecutive text deltas joined by :func:`tokenrelay.coalescing.join_texts`.

        What subscribers use: the log's bare texts are joined as they are, rather than made into one event per
        delta first and joined after.
        """
        log = self._logs.get(run_id)
        if log is None:
            return []
        events = log.events
        if events.base + len(events.tail) <= after and log.info.status != "finished" and timeout != 0:
            await self._wait(run_id, log, timeout)
        end = events.base + len(events.tail)
        if end - after == 1:  # the common case under light load: one new event, nothing to join
            return [_stored(end, events.item(end))]
        return events.coalesced(after)

    async def _wait(self, run_id: str, log: _Log, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if timeout is None:
            log.waiters.append((fut, math.inf))
        else:
            deadline = loop.time() + timeout
            log.waiters.append((fut, deadline))
            self._waiting[run_id] = log
            if timeout < self._slack * 10:
                self._slack = timeout / 10
            if deadline + self._slack < self._sweep_at:
                self._arm(loop, deadline)
        await fut

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = when
        self._sweep = loop.call_at(when, self._sweep_deadlines)

    def _sweep_deadlines(self) -> None:
        """Wake the readers whose deadline has passed; come back for the next one (batched within the slack)."""
        self._sweep = None
        self._sweep_at = math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        horizon = now + self._slack
        earliest = math.inf
        for run_id, log in list(self._waiting.items()):
            keep: list[tuple[asyncio.Future[None], float]] = []
            for fut, deadline in log.waiters:
                if fut.done():
                    continue
                if deadline <= horizon:
                    fut.set_result(None)
                else:
                    keep.append((fut, deadline))
                    earliest = min(earliest, deadline)
            log.waiters = keep
            if not keep:
                del self._waiting[run_id]
        if earliest < math.inf:
            self._arm(loop, max(earliest, now + self._slack))

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

    # approvals

    async def suspend(self, run_id: str, suspension: Suspension) -> int:
        log = self._logs.get(run_id)
        if log is None:
            raise RunNotFound(run_id)
        if log.info.status != "running":
            raise RunFinishedError(f"run {run_id} is not running")
        seq = await self.append(run_id, (RunPaused(suspension.expires_at),))
        log.info.status = "waiting"
        log.suspension = suspension
        delay = max(0.0, suspension.expires_at - time.time())
        log.expiry = asyncio.get_running_loop().call_later(delay, self._expiry_due, run_id)
        return seq

    async def restore_waiting(self, info: RunInfo, events: Sequence[Event], suspension: Suspension) -> bool:
        if info.run_id in self._logs:
            return False
        info.status = "running"
        await self.create(info)
        await self.append(info.run_id, events)
        log = self._logs[info.run_id]
        log.info.status = "waiting"
        log.suspension = suspension
        delay = max(0.0, suspension.expires_at - time.time())
        log.expiry = asyncio.get_running_loop().call_later(delay, self._expiry_due, info.run_id)
        return True

    async def suspension(self, run_id: str) -> Suspension | None:
        log = self._logs.get(run_id)
        return log.suspension if log is not None else None

    async def record_decision(self, run_id: str, decision: ToolApprovalResponse) -> DecisionResult:
        log = self._logs.get(run_id)
        if log is None:
            return DecisionResult("unknown")
        earlier = log.decisions.get(decision.call_id)
        if earlier is not None:
            return DecisionResult("same" if earlier.approved == decision.approved else "conflict")
        suspension = log.suspension
        if suspension is None or all(call.call_id != decision.call_id for call in suspension.calls):
            return DecisionResult("expired" if log.expired else "unknown")
        if time.time() >= suspension.expires_at:
            await self._expire_waiting(log)
            return DecisionResult("expired")
        # No await from here to the end: the check and the claim are one step for every caller in this process.
        log.decisions[decision.call_id] = decision
        log.events.append(decision)
        log.info.last_seq = len(log.events)
        log.wake()
        if any(call.call_id not in log.decisions for call in suspension.calls):
            return DecisionResult("recorded")
        log.suspension = None
        log.info.status = "running"
        if log.expiry is not None:
            log.expiry.cancel()
            log.expiry = None
        decisions = tuple(log.decisions[call.call_id] for call in suspension.calls)
        return DecisionResult("resume", suspension, decisions)

    def _expiry_due(self, run_id: str) -> None:
        log = self._logs.get(run_id)
        if log is not None and log.suspension is not None:
            task = asyncio.get_running_loop().create_task(self._expire_waiting(log))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def cancel_waiting(self, run_id: str) -> bool:
        log = self._logs.get(run_id)
        if log is None or log.suspension is None:
            return False
        await self._end_waiting(log, (FinishEvent("cancelled"),), "cancelled while it waited for approval")
        return True

    async def _expire_waiting(self, log: _Log) -> None:
        """End a waiting run whose approvals did not all come in time: the error, the finish, and history."""
        if log.suspension is not None:
            log.expired = True
            await self._end_waiting(log, (expired_error(), FinishEvent("error")), "its approvals expired")

    async def _end_waiting(self, log: _Log, events: Sequence[Event], why: str) -> None:
        """End a waiting run with ``events`` (its last a finish), then tell the history."""
        if log.suspension is None:
            return
        log.suspension = None
        if log.expiry is not None:
            log.expiry.cancel()
            log.expiry = None
        log.info.status = "running"  # for the append; finished right after, with no await between
        run_id = log.info.run_id
        await self.append(run_id, events)
        await self.finish(run_id)
        logger.info("run %s: %s; ended", run_id, why)
        if self._listener is not None:
            stored = [_stored(seq, item) for seq, item in log.events.items()]
            try:
                await self._listener.run_interrupted(log.info, stored)
            except Exception:
                logger.exception("run %s: saving the ended run failed", run_id)

    async def close(self) -> None:
        for task in list(self._chores):
            task.cancel()
        for log in self._logs.values():
            if log.expiry is not None:
                log.expiry.cancel()
            log.wake()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
            self._sweep_at = math.inf

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
