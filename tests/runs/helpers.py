"""What the run tests share: backends that wait on an event rather than a clock, and an outcome recorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from tokenrelay.backends import GenerateOptions, Message, ScriptedBackend
from tokenrelay.backends.scripted import ScriptStep
from tokenrelay.events import Event, TextDelta
from tokenrelay.runs import RunOutcome


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
