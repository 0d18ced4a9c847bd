"""The run lifecycle: a run writes numbered events and a finish whatever the backend does; cancel; limits; extras."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import collect, texts
from tests.runs.helpers import Outcomes
from tokenrelay.backends import GenerateOptions, Message, Pause, ScriptedBackend
from tokenrelay.backends.base import BackendError
from tokenrelay.events import ErrorEvent, FinishEvent, TextDelta, UsageEvent
from tokenrelay.runs import RunManager, RunOutcome
from tokenrelay.stores import MemoryRunStore, RunInfo, StoredEvent

HELLO = [Message("user", "hello")]


async def test_run_writes_numbered_events_and_a_finish() -> None:
    backend = ScriptedBackend([TextDelta("a"), TextDelta("b"), UsageEvent(1, 2), FinishEvent("stop")])
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    events = await collect(manager, info.run_id)
    assert texts(events) == "ab"
    assert isinstance(events[-1].event, FinishEvent)
    assert events[-1].event.reason == "stop"
    assert [e.seq for e in events] == [2, 3, 4]  # a+b coalesced under id 2: everything was already there
    assert backend.stats.finished == 1


async def test_backend_without_finish_gets_one_added() -> None:
    manager = RunManager(ScriptedBackend([TextDelta("x")]), MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert [type(e.event) for e in events] == [TextDelta, FinishEvent]


async def test_nothing_the_backend_says_after_its_finish_is_recorded() -> None:
    outcomes = Outcomes()
    backend = ScriptedBackend([TextDelta("a"), FinishEvent("length"), TextDelta("late"), UsageEvent(1, 1)])
    manager = RunManager(backend, MemoryRunStore(), on_finish=outcomes)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert [e.event for e in events] == [TextDelta("a"), FinishEvent("length")]
    assert (outcomes[0].text, outcomes[0].reason, outcomes[0].usage) == ("a", "length", None)


async def test_an_error_the_backend_reports_without_finishing_ends_the_run_as_an_error() -> None:
    outcomes = Outcomes()
    backend = ScriptedBackend([TextDelta("a"), ErrorEvent("overloaded", "try later", retryable=True)])
    manager = RunManager(backend, MemoryRunStore(), on_finish=outcomes)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert events[-1].event == FinishEvent("error")
    assert outcomes[0].reason == "error"
    assert outcomes[0].error == ErrorEvent("overloaded", "try later", retryable=True)


async def test_explicit_cancel_reaches_the_backend_and_finishes_as_cancelled() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(30), TextDelta("never")])
    outcomes: list[RunOutcome] = []

    async def on_finish(outcome: RunOutcome) -> None:
        outcomes.append(outcome)

    manager = RunManager(backend, MemoryRunStore(), on_finish=on_finish)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    first = await asyncio.wait_for(sub.__anext__(), 5)
    assert isinstance(first, list)
    assert texts(first) == "a"
    assert await asyncio.wait_for(manager.cancel(info.run_id), 0.25)
    await asyncio.wait_for(backend.cancelled.wait(), 0.25)
    rest = await asyncio.wait_for(sub.__anext__(), 1)
    assert isinstance(rest, list)
    assert isinstance(rest[-1].event, FinishEvent)
    assert rest[-1].event.reason == "cancelled"
    await sub.aclose()
    assert manager.active_runs == 0
    assert outcomes[0].text == "a"
    assert outcomes[0].reason == "cancelled"


async def test_cancelling_a_run_that_runs_nowhere_says_so() -> None:
    manager = RunManager(ScriptedBackend([]), MemoryRunStore())
    assert await manager.cancel("no-such-run") is False


@pytest.mark.parametrize(
    ("failure", "code", "retryable"),
    [
        (BackendError("rate_limited", "slow down", retryable=True), "rate_limited", True),
        (RuntimeError("boom"), "internal_error", False),
    ],
)
async def test_backend_failure_gives_error_then_finish(failure: BaseException, code: str, retryable: bool) -> None:
    manager = RunManager(ScriptedBackend([TextDelta("a"), failure]), MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    error, finish = events[-2].event, events[-1].event
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == (code, retryable)
    assert isinstance(finish, FinishEvent)
    assert finish.reason == "error"


async def test_run_limit() -> None:
    from tokenrelay.runs import RunLimitError

    manager = RunManager(ScriptedBackend([Pause(30)]), MemoryRunStore(), max_active_runs=1)
    await manager.start(HELLO, user_id="u", conversation_id="c")
    with pytest.raises(RunLimitError):
        await manager.start(HELLO, user_id="u", conversation_id="c")
    await manager.shutdown()
    assert manager.active_runs == 0


async def test_options_reach_the_backend() -> None:
    from tokenrelay.backends import SyntheticBackend

    manager = RunManager(SyntheticBackend(tokens=50, interval_ms=0), MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c", options=GenerateOptions(max_tokens=3))
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert isinstance(events[-1].event, FinishEvent)
    assert events[-1].event.reason == "length"
    assert texts(events) == "You said: hello. "


async def test_extras_are_kept_on_the_run_and_handed_to_on_finish() -> None:
    outcomes = Outcomes()
    store = MemoryRunStore()
    manager = RunManager(ScriptedBackend([TextDelta("a")]), store, on_finish=outcomes)
    extra = {"stateless": "1"}
    info = await manager.start(HELLO, user_id="u", conversation_id="c", extra=extra)
    extra["stateless"] = "0"  # the run keeps its own copy
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    stored = await store.get(info.run_id)
    assert stored is not None
    assert stored.extra == {"stateless": "1"}
    assert outcomes[0].extra == {"stateless": "1"}
    plain = await manager.start(HELLO, user_id="u", conversation_id="c2")
    await asyncio.wait_for(manager.wait(plain.run_id), 5)
    assert plain.extra == {}
    assert outcomes[1].extra == {}


async def test_an_interrupted_run_is_saved_as_its_owner_would_have_with_its_extras() -> None:
    outcomes = Outcomes()
    manager = RunManager(ScriptedBackend([]), MemoryRunStore(), on_finish=outcomes)
    info = RunInfo("r", "u", "c", "scripted", 0.0, extra={"stateless": "1"})
    log = [
        StoredEvent(1, TextDelta("Hel")),
        StoredEvent(2, UsageEvent(1, 1)),
        StoredEvent(3, TextDelta("lo")),
        StoredEvent(4, ErrorEvent("interrupted", "gone", retryable=True)),
        StoredEvent(5, FinishEvent("error")),
    ]
    await manager.run_interrupted(info, log)
    error = ErrorEvent("interrupted", "gone", True)
    [outcome] = outcomes
    assert (outcome.run_id, outcome.user_id, outcome.conversation_id) == ("r", "u", "c")
    assert (outcome.text, outcome.reason, outcome.usage, outcome.error) == ("Hello", "error", UsageEvent(1, 1), error)
    assert outcome.extra == {"stateless": "1"}


async def test_a_failing_on_finish_ends_the_run_with_a_finish_that_says_it_was_not_saved() -> None:
    async def broken(outcome: RunOutcome) -> None:
        raise RuntimeError("history is down")

    manager = RunManager(ScriptedBackend([TextDelta("a")]), MemoryRunStore(), on_finish=broken)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert events[-1].event == FinishEvent("stop", saved=False)  # the viewers are told the answer was not kept
    assert manager.active_runs == 0
