"""A backend that replays a script: for your own tests as much as for tokenrelay's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import GenerateOptions, Message, NoSetup
from tokenrelay.events import Event

__all__ = ["Pause", "ScriptedBackend"]


@dataclass(frozen=True, slots=True)
class Pause:
    """Stay silent for ``seconds`` before the next step."""

    seconds: float


ScriptStep = Event | Pause | BaseException


class ScriptedBackend(NoSetup):
    """Replays ``script`` on every stream: events are yielded, a :class:`Pause` waits, an exception is raised.

    ``calls`` records the conversation each stream was given; ``stats`` how each ended, so a test can assert that
    a cancellation reached the backend::

        backend = ScriptedBackend([TextDelta("Hel"), Pause(0.05), TextDelta("lo"), FinishEvent("stop")])
    """

    name = "scripted"

    def __init__(self, script: Sequence[ScriptStep]) -> None:
        self.script = list(script)
        self.calls: list[list[Message]] = []
        self.stats = StreamStats()
        self.cancelled = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        return {"steps": len(self.script), **self.stats.as_dict()}

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        self.calls.append(list(messages))
        with self.stats.track():
            try:
                for step in self.script:
                    if isinstance(step, Pause):
                        await asyncio.sleep(step.seconds)
                    elif isinstance(step, BaseException):
                        raise step
                    else:
                        yield step
            except (asyncio.CancelledError, GeneratorExit):
                self.cancelled.set()
                raise
