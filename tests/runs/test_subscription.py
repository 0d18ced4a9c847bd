"""Subscriptions: following a run from a cursor, heartbeats, and what the last viewer leaving does."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import collect, texts
from tests.runs.helpers import HeldBackend
from tokenrelay.backends import Message, Pause, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta, UsageEvent
from tokenrelay.runs import HEARTBEAT, RunManager, RunNotFound
from tokenrelay.stores import MemoryRunStore

HELLO = [Message("user", "hello")]


async def test_a_subscriber_from_a_cursor_gets_exactly_what_follows() -> None:
    backend = ScriptedBackend([TextDelta(str(i)) for i in range(10)])
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    assert texts(await collect(manager, info.run_id, after=4)) == "456789"


async def test_subscribing_to_an_unknown_run_is_run_not_found() -> None:
    manager = RunManager(ScriptedBackend([]), MemoryRunStore())
    with pytest.raises(RunNotFound):
        await manager.subscribe("no-such-run")


async def test_with_the_cancel_policy_the_last_subscriber_leaving_cancels() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(30)])
    manager = RunManager(backend, MemoryRunStore(), on_disconnect="cancel")
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await asyncio.wait_for(sub.__anext__(), 5)
    await sub.aclose()
    await asyncio.wait_for(backend.cancelled.wait(), 0.25)
    await asyncio.wait_for(manager.wait(info.run_id), 1)
    assert manager.active_runs == 0


async def test_a_viewer_leaving_while_another_watches_cancels_nothing() -> None:
    backend = HeldBackend([TextDelta("a"), TextDelta("b")], hold_before=TextDelta("b"))
    manager = RunManager(backend, MemoryRunStore(), on_disconnect="cancel")
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    first, second = await manager.subscribe(info.run_id), await manager.subscribe(info.run_id)
    assert manager.subscribers == 2
    await asyncio.wait_for(first.__anext__(), 5)
    await first.aclose()
    await first.aclose()  # closing twice counts once
    assert manager.subscribers == 1
    backend.gate.set()
    rest = [item async for item in second]
    await second.aclose()
    assert texts([e for batch in rest if isinstance(batch, list) for e in batch]) == "ab"
    assert backend.stats.finished == 1


async def test_subscriber_that_never_iterated_still_counts_when_it_leaves() -> None:
    backend = ScriptedBackend([Pause(30)])
    manager = RunManager(backend, MemoryRunStore(), on_disconnect="cancel")
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await sub.aclose()  # before the run's task even started
    await asyncio.wait_for(manager.wait(info.run_id), 1)
    assert manager.active_runs == 0
    events = await collect(manager, info.run_id)
    assert isinstance(events[-1].event, FinishEvent)
    assert events[-1].event.reason == "cancelled"


async def test_detach_policy_keeps_running_and_a_returning_subscriber_resumes() -> None:
    backend = HeldBackend([TextDelta("a"), TextDelta("b"), FinishEvent("stop")], hold_before=TextDelta("b"))
    manager = RunManager(backend, MemoryRunStore(), on_disconnect="detach", detach_grace_s=5)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    first = await asyncio.wait_for(sub.__anext__(), 5)
    assert isinstance(first, list)
    await sub.aclose()
    assert manager.active_runs == 1
    backend.gate.set()
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


async def test_text_deltas_written_and_the_first_token_are_measured_per_new_stream() -> None:
    backend = ScriptedBackend([TextDelta("a"), UsageEvent(1, 2), TextDelta("b"), TextDelta("c")])
    manager = RunManager(backend, MemoryRunStore())
    firsts: list[float] = []
    manager.first_token_observer = firsts.append
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    await collect(manager, info.run_id)
    assert manager.tokens_out == 3  # the usage and finish events are not tokens
    assert len(firsts) == 1
    await collect(manager, info.run_id, after=2)  # a resume: its tokens count, its first token is not a new one
    assert manager.tokens_out == 5
    assert len(firsts) == 1


async def test_a_cursor_past_the_end_of_a_running_run_gets_no_ping_per_event_and_ends_with_the_finish() -> None:
    backend = HeldBackend([TextDelta("a"), *(TextDelta(str(i)) for i in range(20))], hold_before=TextDelta("0"))
    manager = RunManager(backend, MemoryRunStore(), heartbeat_s=30)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(backend.held.wait(), 5)
    sub = await manager.subscribe(info.run_id, after=500)  # far past the one event the log has
    backend.gate.set()
    items = [item async for item in sub]
    await sub.aclose()
    assert HEARTBEAT not in items  # 20 events went by, each waking the read: none of them is a heartbeat
    assert len(items) == 1
    [[last]] = items
    assert last.event == FinishEvent("stop")


async def test_a_cursor_past_the_end_of_a_finished_run_gets_the_finish_and_one_at_the_finish_gets_nothing() -> None:
    manager = RunManager(ScriptedBackend([TextDelta("a"), TextDelta("b")]), MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    past = await asyncio.wait_for(collect(manager, info.run_id, after=99), 2)
    assert [e.event for e in past] == [FinishEvent("stop")]
    assert await asyncio.wait_for(collect(manager, info.run_id, after=3), 2) == []  # 3 is the finish's id


async def test_heartbeats_keep_their_interval_while_a_read_is_woken_for_nothing() -> None:
    backend = HeldBackend([TextDelta("a"), Pause(30)], hold_before=TextDelta("a"))
    manager = RunManager(backend, MemoryRunStore(), heartbeat_s=0.1)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(backend.held.wait(), 5)
    sub = await manager.subscribe(info.run_id, after=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(sub.__anext__(), 1) is HEARTBEAT
    backend.gate.set()  # "a" lands behind the cursor and wakes the read: no heartbeat for it
    assert await asyncio.wait_for(sub.__anext__(), 1) is HEARTBEAT
    assert loop.time() - started >= 0.19
    await sub.aclose()
    await manager.shutdown()


async def test_by_default_a_dropped_viewer_leaves_the_run_going_and_a_resume_gets_the_whole_answer() -> None:
    backend = HeldBackend([TextDelta("a"), TextDelta("b"), FinishEvent("stop")], hold_before=TextDelta("b"))
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    first = await asyncio.wait_for(sub.__anext__(), 5)
    assert isinstance(first, list)
    await sub.aclose()  # the connection dropped
    assert (manager.active_runs, backend.cancelled.is_set()) == (1, False)
    backend.gate.set()
    rest = await asyncio.wait_for(collect(manager, info.run_id, after=first[-1].seq), 5)
    assert texts(first + rest) == "ab"
    assert rest[-1].event == FinishEvent("stop")
