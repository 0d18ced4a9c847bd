"""Coalescing: deltas that come close together share a write, the first never waits, the window follows the load."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for_async
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.backends.scripted import ScriptStep
from tokenrelay.coalescing import Coalescer, join_texts
from tokenrelay.events import Event, FinishEvent, StoredEvent, TextDelta, UsageEvent
from tokenrelay.runs import RunManager, coalesce
from tokenrelay.stores.base import RunInfo
from tokenrelay.stores.memory import MemoryRunStore


def info(run_id: str) -> RunInfo:
    return RunInfo(run_id=run_id, user_id="u", conversation_id="c", backend="test", created_at=0.0)


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


def test_coalesce_leaves_short_batches_and_lone_events_as_they_are() -> None:
    assert coalesce([]) == []
    assert coalesce([StoredEvent(7, TextDelta("a"))]) == [StoredEvent(7, TextDelta("a"))]
    lone = [StoredEvent(1, UsageEvent(1, 1)), StoredEvent(2, FinishEvent())]
    assert coalesce(lone) == lone


def test_a_compact_log_joins_by_the_same_rule() -> None:
    # A compact log keeps a text delta as its bare text; both forms join alike, and with each other.
    items: list[tuple[int, Event | str]] = [(1, "a"), (2, TextDelta("b")), (3, UsageEvent(1, 2)), (4, "c"), (5, "d")]
    assert join_texts(items) == [
        StoredEvent(2, TextDelta("ab")),
        StoredEvent(3, UsageEvent(1, 2)),
        StoredEvent(5, TextDelta("cd")),
    ]


events = st.lists(
    st.one_of(
        st.builds(TextDelta, st.text(max_size=3)),
        st.builds(UsageEvent, st.integers(0, 9), st.integers(0, 9)),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(batch=events, cursor=st.integers(0, 12))
def test_joined_reads_are_the_coalesced_reads(batch: list[Event], cursor: int) -> None:
    async def check() -> None:
        store = MemoryRunStore()
        await store.create(info("r"))
        if batch:
            await store.append("r", batch)
        after = min(cursor, len(batch))
        plain = await store.read("r", after, 0)
        assert [e.event for e in plain] == batch[after:]  # text deltas come back as the events they were
        assert await store.read_coalesced("r", after, 0) == coalesce(plain)

    asyncio.run(check())


async def test_first_delta_is_not_held_and_a_burst_shares_one_write() -> None:
    # A window long enough that "at once" and "held for the window" stay far apart on a busy machine.
    steps: list[ScriptStep] = [TextDelta("a"), Pause(1.2), TextDelta("b"), TextDelta("c"), TextDelta("d")]
    backend = ScriptedBackend([*steps, FinishEvent("stop")])
    manager = RunManager(backend, MemoryRunStore(), coalesce_window_s=1.0, coalesce_max_s=0)
    run = await manager.start([], user_id="u", conversation_id="c")
    subscription = await manager.subscribe(run.run_id)
    started = time.monotonic()
    first = await subscription.__anext__()
    assert time.monotonic() - started < 0.5  # a 1 s window, and the first delta went out at once
    assert isinstance(first, list)
    assert [(e.seq, e.event) for e in first] == [(1, TextDelta("a"))]
    rest = [item async for item in subscription]
    texts = [e.event for batch in rest if isinstance(batch, list) for e in batch]
    assert texts == [TextDelta("bcd"), FinishEvent("stop")]  # one frame, carrying the last delta's id
    assert isinstance(rest[0], list)
    assert rest[0][0].seq == 4
    await subscription.aclose()


async def test_the_window_grows_while_the_loop_is_busy_and_goes_when_it_idles() -> None:
    coalescer = Coalescer(max_s=0.05, period_s=0.02)
    coalescer.stream_started()
    try:
        assert coalescer.window_s == 0
        # A loop that never idles (one busy callback after another) until the window opens, or a deadline passes.
        deadline = time.monotonic() + 3
        while coalescer.window_s == 0 and time.monotonic() < deadline:
            spin = time.monotonic() + 0.002
            while time.monotonic() < spin:
                pass
            await asyncio.sleep(0)
        assert coalescer.window_s > 0
        await wait_for_async(lambda: coalescer.window_s == 0, timeout=3, what="the window to close on an idle loop")
    finally:
        coalescer.stream_ended()


async def test_sleepers_due_in_the_same_tick_share_one_wake_up() -> None:
    coalescer = Coalescer(tick_s=0.01)
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.02
    started = loop.time()
    await asyncio.gather(*(coalescer.sleep_until(when + i * 0.001) for i in range(5)))
    assert loop.time() - started >= 0.02
    assert not coalescer._due  # every tick fired and was cleared


async def test_a_silent_run_still_times_out_reads_for_heartbeats() -> None:
    store = MemoryRunStore()
    await store.create(info("r"))
    started = time.monotonic()
    assert await store.read_coalesced("r", 0, 0.1) == []
    assert 0.09 <= time.monotonic() - started < 0.5
