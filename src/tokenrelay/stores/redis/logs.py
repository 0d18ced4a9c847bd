"""A run as one instance's readers know it: the events Redis has acknowledged, and who waits for more.

Every run an instance reads or drives has one :class:`RunLog` here. The writer's side of a run this instance drives
(what is appended but not yet acknowledged) is apart, in ``writer.Outbox``: readers only ever see what Redis has,
so a client can never hold an id that another instance does not know about.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tokenrelay.events import Event, StoredEvent
from tokenrelay.stores.base import RunInfo

__all__ = ["RunLog"]


@dataclass(slots=True, eq=False)
class RunLog:
    """This instance's copy of one run's log, and the readers waiting for it to grow.

    Times are monotonic. ``touched`` is when a reader last came by (a followed run nobody reads is let go);
    ``expires`` is when to drop the copy of a finished run (Redis keeps it until its TTL).
    """

    info: RunInfo
    owner: str  # the instance that drives the run
    events: list[Event] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    touched: float = 0.0
    expires: float = 0.0
    # Runs driven elsewhere: whether a tail reader follows the stream, when it last moved and when its owner's
    # liveness was last checked.
    followed: bool = False
    moved: float = 0.0
    checked: float = 0.0
    missing_since: float = 0.0  # when its keys were first found gone from Redis (0: they are there)
    # Another instance ended this run while this one drove it: this copy lacks that ending, so the run is read from
    # Redis again.
    superseded: bool = False
    # An end this instance gave its readers when Redis could not (``liveness.end_locally``): after the events, under
    # the last one's id, so that a resume from it asks Redis for exactly what follows once it can.
    ending: list[Event] = field(default_factory=list)

    def wake(self) -> None:
        """Wake every reader waiting for more: there is more, or there never will be."""
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            _wake_one(fut)

    async def wait(self, timeout: float | None) -> None:
        """Until the next :meth:`wake`, or ``timeout`` seconds (``None``: no limit).

        A bare future and one timer rather than ``asyncio.wait_for``, which costs a task per wait.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiters.append(fut)
        handle = loop.call_later(timeout, _wake_one, fut) if timeout is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()

    def since(self, after: int) -> list[StoredEvent]:
        """The events after sequence id ``after``."""
        events = self.events
        out = [StoredEvent(seq, events[seq - 1]) for seq in range(after + 1, len(events) + 1)]
        if self.ending and after <= len(events):
            out += [StoredEvent(len(events), event) for event in self.ending]
        return out


def _wake_one(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
