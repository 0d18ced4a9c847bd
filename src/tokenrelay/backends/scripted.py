"""A backend that replays a script: for your own tests as much as for tokenrelay's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import ApprovalDecision, BackendError, GenerateOptions, Message, NoSetup, Suspend
from tokenrelay.events import Event, ToolApprovalRequest, ToolCallArgsDelta, ToolCallResult, ToolCallStart

__all__ = ["DENIED", "Approval", "Pause", "ScriptedBackend", "approval_state", "resumed_steps"]

DENIED = "The user denied this tool call."


@dataclass(frozen=True, slots=True)
class Pause:
    """Stay silent for ``seconds`` before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Approval:
    """A tool call that needs a person's approval: the call is streamed, its approval requested and the stream
    suspended (approval steps in a row wait together). On resume an approved call runs — ``output`` is its result,
    and each run is one line (the call id) appended to the file ``record``, when given, so that a test can count
    them across processes — and a denied one's result is :data:`DENIED` and the reason; the script goes on after."""

    call_id: str
    name: str
    arguments: str = "{}"
    output: str = "done"
    record: str | None = None


ScriptStep = Event | Pause | Approval | BaseException


def approval_state(key: str, at: int, calls: Sequence[Approval]) -> Suspend:
    """What a scripted stream suspends with: where in which script it stopped, and the calls waiting."""
    waiting = [[c.call_id, c.name, c.arguments, c.output, c.record] for c in calls]
    return Suspend(json.dumps({"script": key, "at": at, "calls": waiting}))


def suspended_at(steps: Sequence[ScriptStep], at: int) -> tuple[list[Event], Suspend | None, int]:
    """If ``steps[at]`` asks for approval: the events of the calls in a row that do, the suspension and where the
    script goes on; else ``([], None, at)``."""
    calls: list[Approval] = []
    end = at
    while end < len(steps) and isinstance(steps[end], Approval):
        step = steps[end]
        assert isinstance(step, Approval)
        calls.append(step)
        end += 1
    events: list[Event] = []
    for c in calls:
        events += [ToolCallStart(c.call_id, c.name), ToolCallArgsDelta(c.call_id, c.arguments)]
    events += [ToolApprovalRequest(c.call_id, c.name, c.arguments) for c in calls]
    return events, (approval_state("", end, calls) if calls else None), end


def resumed_steps(state: str, decisions: Sequence[ApprovalDecision]) -> tuple[str, int, list[Event]]:
    """Go on from :func:`approval_state`'s state: run the approved calls (recording each), deny the others; the
    script's key, where it goes on, and the calls' results. ``BackendError`` for a state it did not write."""
    try:
        data = json.loads(state)
        key, at, calls = str(data["script"]), int(data["at"]), list(data["calls"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError("bad_state", f"not a scripted backend's state: {exc}") from None
    answers = {d.call_id: d for d in decisions}
    results: list[Event] = []
    for call_id, _name, _arguments, output, record in calls:
        answer = answers.get(call_id)
        if answer is not None and answer.approved:
            if record:
                with Path(record).open("a", encoding="utf-8") as f:
                    f.write(call_id + "\n")
            results.append(ToolCallResult(call_id, output))
        else:
            reason = f" Reason: {answer.reason}" if answer is not None and answer.reason else ""
            results.append(ToolCallResult(call_id, DENIED + reason, is_error=True))
    return key, at, results


def _key_state(suspend: Suspend, key: str) -> Suspend:
    data = json.loads(suspend.state)
    data["script"] = key
    return Suspend(json.dumps(data))


async def play(steps: Sequence[ScriptStep], at: int, key: str = "") -> AsyncGenerator[Event | Suspend, None]:
    """Play ``steps`` from ``at``: events yielded, pauses waited, exceptions raised, approvals suspended."""
    i = at
    while i < len(steps):
        step = steps[i]
        if isinstance(step, Approval):
            events, suspend, i = suspended_at(steps, i)
            for event in events:
                yield event
            assert suspend is not None
            yield _key_state(suspend, key)
            return
        i += 1
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, BackendError):
            # A fresh exception each time, so tracebacks do not pile up on the script's instance.
            raise BackendError(step.code, step.message, retryable=step.retryable, retry_after=step.retry_after)
        elif isinstance(step, BaseException):
            raise step
        else:
            yield step


class ScriptedBackend(NoSetup):
    """Replays ``script`` on every stream: events are yielded, a :class:`Pause` waits, an exception is raised.

    ``calls`` records the conversation each stream was given; ``stats`` how each ended, so a test can assert that
    a cancellation reached the backend::

        backend = ScriptedBackend([TextDelta("Hel"), Pause(0.05), TextDelta("lo"), FinishEvent("stop")])

    An :class:`Approval` step pauses the run for a person's approval; the backend is resumable (``resume``).
    """

    name = "scripted"

    def __init__(self, script: Sequence[ScriptStep]) -> None:
        self.script = list(script)
        self.calls: list[list[Message]] = []
        self.stats = StreamStats()
        self.cancelled = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        return {"steps": len(self.script), **self.stats.as_dict()}

    async def stream(
        self, messages: Sequence[Message], options: GenerateOptions
    ) -> AsyncGenerator[Event | Suspend, None]:
        self.calls.append(list(messages))
        async for item in self._play(0, []):
            yield item

    async def resume(self, state: str, decisions: Sequence[ApprovalDecision]) -> AsyncGenerator[Event | Suspend, None]:
        _, at, results = resumed_steps(state, decisions)
        async for item in self._play(at, results):
            yield item

    async def _play(self, at: int, first: list[Event]) -> AsyncGenerator[Event | Suspend, None]:
        with self.stats.track():
            try:
                for event in first:
                    yield event
                async for item in play(self.script, at):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                self.cancelled.set()
                raise
