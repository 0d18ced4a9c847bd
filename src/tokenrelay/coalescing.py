"""Coalescing: deltas that come close together go out in one write. Both halves of it live here.

*Joining* (:func:`coalesce`, :func:`join_texts`): consecutive text deltas read together become one delta carrying
the last one's id. Every store's ``read_coalesced`` joins by these functions.

*Pacing* (:class:`Coalescer`): how long a stream waits after a write before the next, so that there is something to
join. A write costs far more than the few bytes of a delta (a wake-up, the encoder, the ASGI ``send`` chain, a system
call), so a server that writes once per token is capped by writes, not tokens. The window follows the load, measured
every ``period_s``: while the event loop falls behind (its timers fire late) or never idles, the window grows; once
the loop keeps up with time to spare, it shrinks back to nothing. So it settles at the smallest window the load
allows, rather than at its cap. A stream's first delta — and any delta after a pause longer than the window — is
never held: only deltas that come sooner than ``window`` after the stream's last write wait for it, and then go out
together.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence

from tokenrelay.events import Event, StoredEvent, TextDelta

__all__ = ["Coalescer", "coalesce", "join_texts"]


def coalesce(batch: Sequence[StoredEvent]) -> list[StoredEvent]:
    """Join consecutive text deltas into one, keeping the last one's sequence id.

    Resuming after the joined event's id is exactly right: every delta it carries has a smaller or equal id. The
    batch is whatever accumulated while the subscriber was busy writing, so the amount of joining follows the load
    and the first token is never held back.
    """
    if len(batch) < 2:
        return list(batch)
    return join_texts((item.seq, item.event) for item in batch)


def join_texts(items: Iterable[tuple[int, Event | str]]) -> list[StoredEvent]:
    """The joining rule of :func:`coalesce`, over ``(seq, event)`` pairs where a text delta may be its bare text.

    The bare text is how a compact log keeps a text delta (see :class:`tokenrelay.stores.memory.MemoryRunStore`),
    so such a log joins its deltas here without rebuilding an event per delta first.
    """
    out: list[StoredEvent] = []
    texts: list[str] = []
    last_text = 0  # the id of the last delta in ``texts``
    for seq, item in items:
        if isinstance(item, str):
            texts.append(item)
            last_text = seq
        elif type(item) is TextDelta:
            texts.append(item.text)
            last_text = seq
        else:
            if texts:
                out.append(StoredEvent(last_text, TextDelta("".join(texts))))
                texts = []
            out.append(StoredEvent(seq, item))
    if texts:
        out.append(StoredEvent(last_text, TextDelta("".join(texts))))
    return out


class Coalescer:
    """One per run manager: the current window, and a cheap way for many streams to wait for it.

    ``floor_s`` is a fixed minimum window (``--coalesce-ms``); ``max_s`` caps the adaptive one (``--coalesce-max-ms``;
    0 turns adaptation off). Waits are rounded up to ``tick_s`` and each tick is one timer for all the streams due
    then: a timer per stream per write (``asyncio.sleep``) would cost about what the write it saves does.
    """

    __slots__ = (
        "_adaptive",
        "_cpu",
        "_due",
        "_expected",
        "_probe",
        "_streams",
        "_wall",
        "busy_high",
        "busy_low",
        "floor_s",
        "lag_high_s",
        "max_s",
        "period_s",
        "tick_s",
    )

    def __init__(
        self,
        *,
        floor_s: float = 0.0,
        max_s: float = 0.1,
        tick_s: float = 0.001,
        period_s: float = 0.1,
        busy_high: float = 0.97,
        busy_low: float = 0.9,
        lag_high_s: float = 0.005,
    ) -> None:
        self.floor_s = floor_s
        self.max_s = max_s
        self.tick_s = tick_s
        self.period_s = period_s
        self.busy_high = busy_high
        self.busy_low = busy_low
        self.lag_high_s = lag_high_s
        self._adaptive = 0.0
        self._streams = 0
        self._due: dict[int, list[asyncio.Future[None]]] = {}
        self._probe: asyncio.TimerHandle | None = None
        self._wall = self._cpu = self._expected = 0.0

    @property
    def window_s(self) -> float:
        return max(self.floor_s, self._adaptive)

    def stream_started(self) -> None:
        """A stream began writing: measure the load while any stream is."""
        self._streams += 1
        if self._streams == 1 and self.max_s > 0:
            loop = asyncio.get_running_loop()
            self._wall, self._cpu = loop.time(), time.thread_time()
            self._arm(loop)

    def stream_ended(self) -> None:
        self._streams -= 1
        if self._streams == 0:
            self._adaptive = 0.0
            if self._probe is not None:
                self._probe.cancel()
                self._probe = None

    async def sleep_until(self, when: float) -> None:
        """Sleep until the first tick at or after ``when`` (the event loop's clock)."""
        loop = asyncio.get_running_loop()
        slot = math.ceil(when / self.tick_s)
        fut: asyncio.Future[None] = loop.create_future()
        sleepers = self._due.get(slot)
        if sleepers is None:
            self._due[slot] = [fut]
            loop.call_at(slot * self.tick_s, self._fire, slot)
        else:
            sleepers.append(fut)
        await fut

    def _fire(self, slot: int) -> None:
        for fut in self._due.pop(slot, ()):
            if not fut.done():
                fut.set_result(None)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._expected = loop.time() + self.period_s
        self._probe = loop.call_at(self._expected, self._measure)

    def _measure(self) -> None:
        """The loop thread's CPU share since the last probe, and how late this probe ran: widen or narrow."""
        loop = asyncio.get_running_loop()
        wall, cpu = loop.time(), time.thread_time()
        busy = (cpu - self._cpu) / max(wall - self._wall, 1e-9)
        late = wall - self._expected
        self._wall, self._cpu = wall, cpu
        if busy > self.busy_high or late > self.lag_high_s:
            self._adaptive = min(self.max_s, max(2 * self.tick_s, self._adaptive * 1.5))
        elif busy < self.busy_low and late < self.lag_high_s / 2:
            self._adaptive *= 0.7
            if self._adaptive < self.tick_s:
                self._adaptive = 0.0
        self._arm(loop)
