"""A driven run's one state: every transition, and the edge cases the state exists for."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.conftest import collect, texts
from tests.runs.helpers import HeldBackend, Outcomes, StubbornBackend
from tokenrelay.backends import Message, Pause, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.runs import RunManager, RunOutcome
from tokenrelay.runs.base import new_id, new_run_id
from tokenrelay.runs.state import Latch, Run, RunState
from tokenrelay.stores import MemoryRunStore, RunInfo

HELLO = [Message("user", "hello")]


async def a_run() -> Run:
    run = Run(RunInfo("r", "u", "c", "x", 0.0))
    run.task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)  # the task takes its first step
    return run


def cancels(run: Run) -> int:
    assert run.task is not None
    return run.task.cancelling()


async def test_a_run_goes_pending_running_finishing_done() -> None:
    run = await a_run()
    assert run.state is RunState.PENDING
    assert run.begin()
    assert run.state is RunState.RUNNING
    run.finishing()
    assert run.state is RunState.FINISHING
    run.end()
    assert run.state is RunState.DONE
    assert run.ended
    assert run.done.is_set()
    assert cancels(run) == 0


async def test_a_cancel_before_the_first_step_is_seen_there_without_cancelling_the_task() -> None:
    run = await a_run()
    run.cancel()
    assert run.state is RunState.CANCELLING
    assert cancels(run) == 0  # a task cancelled before its first step could not record its end
    assert not run.begin()


async def test_a_cancel_while_running_cancels_the_task_once() -> None:
    run = await a_run()
    run.begin()
    run.cancel()
    run.cancel()
    assert run.state is RunState.CANCELLING
    assert cancels(run) == 1
    run.finishing()
    assert run.state is RunState.FINISHING


async def test_a_cancel_while_finishing_does_nothing() -> None:
    run = await a_run()
    run.begin()
    run.finishing()
    run.cancel()
    assert run.state is RunState.FINISHING
    assert cancels(run) == 0


async def test_a_lost_run_is_stopped_and_stays_lost_while_it_finishes() -> None:
    run = await a_run()
    run.begin()
    run.lose()
    assert run.lost
    assert cancels(run) == 1
    run.cancel()  # already stopping
    assert cancels(run) == 1
    run.finishing()
    assert run.state is RunState.LOST
    run.end()
    run.lose()  # too late: it has ended
    assert run.state is RunState.DONE


async def test_a_run_lost_after_a_cancel_or_while_finishing_is_not_cancelled_again() -> None:
    for before in (Run.cancel, Run.finishing):
        run = await a_run()
        run.begin()
        before(run)
        run.lose()
        assert run.lost
        assert cancels(run) == (1 if before is Run.cancel else 0)


async def test_cancel_before_the_first_step_still_records_the_end() -> None:
    outcomes = Outcomes()
    backend = ScriptedBackend([Pause(30), TextDelta("never")])
    manager = RunManager(backend, MemoryRunStore(), on_finish=outcomes)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    assert await manager.cancel(info.run_id, timeout=2) is True  # awaited at once: the task has not taken a step
    assert backend.calls == []  # the backend was never asked
    events = await collect(manager, info.run_id)
    assert [e.event for e in events] == [FinishEvent("cancelled")]
    assert [(o.text, o.reason) for o in outcomes] == [("", "cancelled")]
    assert manager.active_runs == 0


async def test_a_second_cancel_while_the_run_records_its_end_does_not_strand_it() -> None:
    # An explicit cancel, then the last viewer leaving while the outcome is being saved: the second cancel must
    # not interrupt the run's bookkeeping, or it would never finish (and cancel() would never return).
    saving = asyncio.Event()
    release = asyncio.Event()

    async def slow_save(outcome: RunOutcome) -> None:
        saving.set()
        await release.wait()

    backend = ScriptedBackend([TextDelta("a"), Pause(30)])
    manager = RunManager(backend, MemoryRunStore(), on_finish=slow_save, on_disconnect="cancel")
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await asyncio.wait_for(sub.__anext__(), 5)
    cancel = asyncio.create_task(manager.cancel(info.run_id))
    await asyncio.wait_for(saving.wait(), 2)
    await sub.aclose()  # the last viewer leaves mid-save
    release.set()
    assert await asyncio.wait_for(cancel, 2) is True
    assert manager.active_runs == 0


async def test_cancel_returns_after_its_timeout_when_the_backend_ignores_it_for_a_while() -> None:
    backend = StubbornBackend()
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    first = await asyncio.wait_for(sub.__anext__(), 5)
    assert isinstance(first, list)
    assert texts(first) == "a"
    started = time.monotonic()
    assert await asyncio.wait_for(manager.cancel(info.run_id, timeout=0.1), 2) is True
    assert time.monotonic() - started >= 0.1
    assert backend.cancelled.is_set()
    assert manager.active_runs == 1  # still closing its backend
    backend.release.set()
    await asyncio.wait_for(manager.wait(info.run_id), 2)
    rest = await asyncio.wait_for(sub.__anext__(), 2)
    assert isinstance(rest, list)
    assert rest[-1].event == FinishEvent("cancelled")
    await sub.aclose()


async def test_a_run_lost_to_another_instance_records_nothing() -> None:
    outcomes = Outcomes()
    backend = HeldBackend([TextDelta("a"), TextDelta("b")], hold_before=TextDelta("b"))
    store = MemoryRunStore()
    manager = RunManager(backend, store, on_finish=outcomes)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(backend.held.wait(), 5)
    manager.run_lost(info.run_id)
    await asyncio.wait_for(manager.wait(info.run_id), 2)
    assert backend.cancelled.is_set()
    assert outcomes == []  # the instance that ended the run saves it
    assert [e.event for e in await store.read(info.run_id, 0, 0)] == [TextDelta("a")]  # no finish from here
    stored = await store.get(info.run_id)
    assert stored is not None
    assert stored.status == "finished"


def test_ids_never_start_with_a_dash_so_a_command_line_takes_them_as_arguments() -> None:
    # token_urlsafe starts with "-" once in 64 draws; 5,000 draws without the rule would all but surely show one.
    runs = [new_run_id() for _ in range(5000)]
    conversations = [new_id(12) for _ in range(5000)]
    assert not [i for i in runs + conversations if i.startswith("-")]
    assert {len(i) for i in runs} == {22}  # still 128 random bits
    assert len(set(runs)) == len(runs)


async def test_a_latch_wakes_its_waiters_once_set_and_forgets_a_cancelled_one() -> None:
    latch = Latch()
    assert not latch.is_set()
    first = asyncio.ensure_future(latch.wait())
    gone = asyncio.ensure_future(latch.wait())
    await asyncio.sleep(0)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    assert latch._waiters is not None
    assert len(latch._waiters) == 1  # the cancelled waiter is not kept
    assert not first.done()
    latch.set()
    await asyncio.wait_for(first, 5)
    assert latch.is_set()
    await asyncio.wait_for(latch.wait(), 5)  # once set, a wait returns at once
    latch.set()  # again: nothing changes
    assert latch.is_set()


async def test_a_cleared_latch_waits_again_until_it_is_set_again() -> None:
    # What uvicorn does with the events the edge replaces: clear after each wake, wait, set.
    latch = Latch()
    latch.set()
    latch.clear()
    assert not latch.is_set()
    waiter = asyncio.ensure_future(latch.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    latch.set()
    await asyncio.wait_for(waiter, 5)
    latch.clear()
    again = asyncio.ensure_future(latch.wait())
    await asyncio.sleep(0)
    assert not again.done()
    latch.set()
    await asyncio.wait_for(again, 5)
