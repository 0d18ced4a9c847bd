"""The in-process run store: sequence ids, reads from a cursor, waiting, finished runs, expiry and its errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from tokenrelay.errors import RunExistsError, RunFinishedError, RunNotFound, StoreError, TokenrelayError
from tokenrelay.events import FinishEvent, StoredEvent, TextDelta, UsageEvent
from tokenrelay.stores import MemoryRunStore, RunInfo
from tokenrelay.stores.chat_runs import MemoryChatRunIndex


def info(run_id: str = "r") -> RunInfo:
    return RunInfo(run_id=run_id, user_id="u", conversation_id="c", backend="test", created_at=0.0)


async def a_store(*run_ids: str, max_finished: int = 10_000) -> MemoryRunStore:
    store = MemoryRunStore(max_finished=max_finished)
    for run_id in run_ids or ("r",):
        await store.create(info(run_id))
    return store


async def test_sequence_ids_start_at_one_and_have_no_gaps() -> None:
    store = await a_store()
    assert await store.append("r", [TextDelta("a"), TextDelta("b")]) == 2
    assert await store.append("r", [UsageEvent(1, 2)]) == 3
    events = await store.read("r", 0, 0)
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.event for e in events] == [TextDelta("a"), TextDelta("b"), UsageEvent(1, 2)]
    stored = await store.get("r")
    assert stored is not None
    assert stored.last_seq == 3


async def test_a_read_returns_exactly_what_follows_its_cursor() -> None:
    store = await a_store()
    await store.append("r", [TextDelta(str(i)) for i in range(5)])
    assert [e.seq for e in await store.read("r", 2, 0)] == [3, 4, 5]
    assert await store.read("r", 5, 0) == []
    assert await store.read_coalesced("r", 2, 0) == [StoredEvent(5, TextDelta("234"))]
    assert await store.read_coalesced("r", 4, 0) == [StoredEvent(5, TextDelta("4"))]


async def test_a_waiting_read_wakes_on_the_next_append() -> None:
    store = await a_store()
    for cursor, read in enumerate((store.read, store.read_coalesced)):
        reading = asyncio.create_task(read("r", cursor, None))
        await asyncio.sleep(0)  # the reader is waiting
        assert not reading.done()
        seq = await store.append("r", [TextDelta("x")])
        assert await asyncio.wait_for(reading, 2) == [StoredEvent(seq, TextDelta("x"))]


async def test_a_read_with_nothing_new_waits_its_timeout_then_returns_nothing() -> None:
    store = await a_store()
    started = time.monotonic()
    assert await store.read("r", 0, 0.1) == []
    assert 0.09 <= time.monotonic() - started < 1
    started = time.monotonic()
    assert await store.read("r", 0, 0) == []  # no wait at all
    assert time.monotonic() - started < 0.05


async def test_a_finished_run_is_read_at_once_and_refuses_appends() -> None:
    store = await a_store()
    await store.append("r", [TextDelta("a"), FinishEvent()])
    waiting = asyncio.create_task(store.read("r", 2, None))
    await asyncio.sleep(0)
    await store.finish("r")
    assert await asyncio.wait_for(waiting, 2) == []  # finishing wakes the readers
    assert await asyncio.wait_for(store.read("r", 2, None), 1) == []  # and none waits after
    stored = await store.get("r")
    assert stored is not None
    assert (stored.status, stored.finished_at is not None) == ("finished", True)
    await store.finish("r")  # again: nothing happens
    with pytest.raises(RunFinishedError):
        await store.append("r", [TextDelta("late")])


async def test_finished_runs_expire_after_their_ttl() -> None:
    store = MemoryRunStore(ttl_s=0.0, max_finished=10)
    await store.create(RunInfo("r1", "u", "c", "x", 0.0))
    await store.finish("r1")
    await store.create(RunInfo("r2", "u", "c", "x", 0.0))  # creating sweeps expired runs
    assert await store.get("r1") is None
    assert await store.get("r2") is not None


async def test_at_most_max_finished_are_kept_oldest_first_and_running_runs_never_go() -> None:
    store = await a_store("running", "f1", "f2", "f3", max_finished=2)
    for run_id in ("f1", "f2", "f3"):
        await store.finish(run_id)
    assert [await store.get(r) is not None for r in ("running", "f1", "f2", "f3")] == [True, False, True, True]
    assert len(store) == 3


async def test_errors_are_tokenrelay_errors() -> None:
    store = await a_store()
    with pytest.raises(RunExistsError):
        await store.create(info("r"))
    with pytest.raises(RunNotFound):
        await store.append("missing", [TextDelta("a")])
    await store.finish("r")
    with pytest.raises(RunFinishedError) as finished:
        await store.append("r", [TextDelta("a")])
    assert isinstance(finished.value, StoreError)
    assert isinstance(finished.value, TokenrelayError)
    assert isinstance(finished.value, ValueError)  # what it raised before it had errors of its own


async def test_an_unknown_run_reads_as_nothing() -> None:
    store = MemoryRunStore()
    assert await store.get("missing") is None
    assert await store.read("missing", 0, None) == []
    assert await store.read_coalesced("missing", 0, None) == []
    await store.finish("missing")  # nothing to finish


async def test_viewers_are_counted_and_never_below_zero() -> None:
    store = await a_store()
    assert await store.add_viewer("r") == 1
    assert await store.add_viewer("r") == 2
    assert await store.remove_viewer("r") == 1
    assert await store.viewers("r") == 1
    assert await store.remove_viewer("r") == 0
    assert await store.remove_viewer("r") == 0
    assert (await store.add_viewer("missing"), await store.remove_viewer("missing")) == (0, 0)
    assert await store.viewers("missing") == 0


async def test_one_instance_has_nobody_else_to_ask() -> None:
    store = await a_store()
    assert await store.request_cancel("r") is False
    index = store.chat_run_index()
    assert isinstance(index, MemoryChatRunIndex)
    assert store.chat_run_index() is index
    await index.set("u", "chat", "r")
    assert await index.get("u", "chat") == "r"
    assert await index.get("other", "chat") is None


async def test_close_wakes_waiting_readers() -> None:
    store = await a_store()
    reading = asyncio.create_task(store.read("r", 0, 30))
    await asyncio.sleep(0)
    await store.close()
    assert await asyncio.wait_for(reading, 2) == []
