from __future__ import annotations

import asyncio

import pytest

from tests.conftest import collect, texts
from tokenrelay.backends import GenerateOptions, Message, Pause, ScriptedBackend
from tokenrelay.backends.base import BackendError
from tokenrelay.events import ErrorEvent, FinishEvent, TextDelta, UsageEvent
from tokenrelay.runs import HEARTBEAT, RunManager, RunOutcome, coalesce
from tokenrelay.stores import MemoryRunStore, StoredEvent

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


async def test_a_subscriber_from_a_cursor_gets_exactly_what_follows() -> None:
    backend = ScriptedBackend([TextDelta(str(i)) for i in range(10)])
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    assert texts(await collect(manager, info.run_id, after=4)) == "456789"


async def test_backend_without_finish_gets_one_added() -> None:
    manager = RunManager(ScriptedBackend([TextDelta("x")]), MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert [type(e.event) for e in events] == [TextDelta, FinishEvent]


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


async def test_last_subscriber_leaving_cancels_by_default() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(30)])
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await asyncio.wait_for(sub.__anext__(), 5)
    await sub.aclose()
    await asyncio.wait_for(backend.cancelled.wait(), 0.25)
    await asyncio.wait_for(manager.wait(info.run_id), 1)
    assert manager.active_runs == 0


async def test_subscriber_that_never_iterated_still_counts_when_it_leaves() -> None:
    backend = ScriptedBackend([Pause(30)])
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await sub.aclose()  # before the run's task even started
    await asyncio.wait_for(manager.wait(info.run_id), 1)
    assert manager.active_runs == 0
    events = await collect(manager, info.run_id)
    assert isinstance(events[-1].event, FinishEvent)
    assert events[-1].event.reason == "cancelled"


async def test_detach_policy_keeps_running_and_a_returning_subscriber_resumes() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(0.1), TextDelta("b"), FinishEvent("stop")])
    manager = RunManager(backend, MemoryRunStore(), on_disconnect="detach", detach_grace_s=5)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    first = await asyncio.wait_for(sub.__anext__(), 5)
    assert isinstance(first, list)
    await sub.aclose()
    assert manager.active_runs == 1
    rest = await asyncio.wait_for(collect(manager, info.run_id, after=first[-1].seq), 5)
    assert texts(rest) == "b"
    assert backend.stats.finished == 1


async def test_detached_run_is_cancelled_when_nobody_returns_in_time() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(30)])
    manager = RunManager(backend, MemoryRunStore(), on_disconnect="detach", detach_grace_s=0.05)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await asyncio.wait_for(sub.__anext__(), 5)
    await sub.aclose()
    await asyncio.wait_for(backend.cancelled.wait(), 2)


async def test_heartbeat_while_the_backend_is_silent() -> None:
    backend = ScriptedBackend([Pause(0.3), TextDelta("late")])
    manager = RunManager(backend, MemoryRunStore(), heartbeat_s=0.05)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    assert await asyncio.wait_for(sub.__anext__(), 1) is HEARTBEAT
    await sub.aclose()


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


def test_coalesce_joins_runs_of_text_and_keeps_the_last_id() -> None:
    batch = [
        StoredEvent(1, TextDelta("a")),
        StoredEvent(2, TextDelta("b")),
        StoredEvent(3, UsageEvent(1, 2)),
        StoredEvent(4, TextDelta("c")),
        StoredEvent(5, FinishEvent()),
    ]
    assert coalesce(batch) == [
        StoredEvent(2, TextDelta("ab")),
        StoredEvent(3, UsageEvent(1, 2)),
        StoredEvent(4, TextDelta("c")),
        StoredEvent(5, FinishEvent()),
    ]


async def test_memory_store_expires_finished_runs() -> None:
    from tokenrelay.stores import RunInfo

    store = MemoryRunStore(ttl_s=0.0, max_finished=10)
    await store.create(RunInfo("r1", "u", "c", "x", 0.0))
    await store.finish("r1")
    await store.create(RunInfo("r2", "u", "c", "x", 0.0))  # creating sweeps expired runs
    assert await store.get("r1") is None
    assert await store.get("r2") is not None


async def test_options_reach_the_backend() -> None:
    from tokenrelay.backends import SyntheticBackend

    manager = RunManager(SyntheticBackend(tokens=50, interval_ms=0), MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c", options=GenerateOptions(max_tokens=3))
    events = await asyncio.wait_for(collect(manager, info.run_id), 5)
    assert isinstance(events[-1].event, FinishEvent)
    assert events[-1].event.reason == "length"
    assert texts(events) == "You said: hello. "


async def test_a_second_cancel_while_the_run_records_its_end_does_not_strand_it() -> None:
    # An explicit cancel, then the last viewer leaving while the outcome is being saved: the second cancel must
    # not interrupt the run's bookkeeping, or it would never finish (and cancel() would never return).
    saving = asyncio.Event()
    release = asyncio.Event()

    async def slow_save(outcome: RunOutcome) -> None:
        saving.set()
        await release.wait()

    backend = ScriptedBackend([TextDelta("a"), Pause(30)])
    manager = RunManager(backend, MemoryRunStore(), on_finish=slow_save)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await asyncio.wait_for(sub.__anext__(), 5)
    cancel = asyncio.create_task(manager.cancel(info.run_id))
    await asyncio.wait_for(saving.wait(), 2)
    await sub.aclose()  # the last viewer leaves mid-save
    release.set()
    assert await asyncio.wait_for(cancel, 2) is True
    assert manager.active_runs == 0
