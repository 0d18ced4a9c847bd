"""What the run tests share: backends that wait on an event rather than a clock, and an outcome recorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from tokenrelay.backends import GenerateOptions, Message, ScriptedBackend
from tokenrelay.backends.scripted import ScriptStep
from tokenrelay.errors import StoreUnavailable
from tokenrelay.events import Event, StoredEvent, TextDelta
from tokenrelay.runs import RunOutcome
from tokenrelay.stores import MemoryRunStore


class HeldBackend(ScriptedBackend):
    """Replays its script, but holds ``hold_before`` back until ``gate`` is set (a cancel while held lands)."""

    def __init__(self, script: Sequence[ScriptStep], *, hold_before: Event) -> None:
        super().__init__(script)
        self.hold_before = hold_before
        self.gate = asyncio.Event()
        self.held = asyncio.Event()

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        inner = super().stream(messages, options)
        try:
            async for event in inner:
                if event == self.hold_before:
                    self.held.set()
                    await self.gate.wait()
                yield event
        finally:
            await inner.aclose()


class StubbornBackend(ScriptedBackend):
    """Says "a", then waits forever and, once cancelled, goes on ignoring it until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__([])
        self.release = asyncio.Event()

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        yield TextDelta("a")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.release.wait()
            raise


class Outcomes(list[RunOutcome]):
    """An ``on_finish`` that keeps every outcome, and can be waited on."""

    def __init__(self) -> None:
        super().__init__()
        self.saved = asyncio.Event()

    async def __call__(self, outcome: RunOutcome) -> None:
        self.append(outcome)
        self.saved.set()


class FailingStore(MemoryRunStore):
    """A memory store that fails on demand, as a store that cannot be reached does (the store itself still works).

    ``append_failures`` appends raise ``StoreUnavailable`` (``math.inf``: all of them from now on); with
    ``reads_fail`` every coalesced read (a subscription's) raises; with ``hang_cancel_requests`` ``request_cancel``
    never returns, and with ``hang_reads`` plain reads never return. ``request_cancel`` answers as a shared store
    does for a run another instance drives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.append_failures: float = 0
        self.failed_appends = 0
        self.reads_fail = False
        self.hang_cancel_requests = False
        self.hang_reads = False

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        if self.append_failures > 0:
            self.append_failures -= 1
            self.failed_appends += 1
            raise StoreUnavailable("the store is down", retry_after=2.0)
        return await super().append(run_id, events)

    async def read_coalesced(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        if self.reads_fail:
            raise StoreUnavailable("the store is down", retry_after=2.0)
        return await super().read_coalesced(run_id, after, timeout)

    async def request_cancel(self, run_id: str) -> bool:
        if self.hang_cancel_requests:
            await asyncio.Event().wait()
        return True

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        if self.hang_reads:
            await asyncio.Event().wait()
        return await super().read(run_id, after, timeout)
