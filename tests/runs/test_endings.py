"""Every run ends, and every viewer sees the end: shutdown, a failing store, a failing save, bounded cancels."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from tests.conftest import collect, texts
from tests.runs.helpers import FailingStore, HeldBackend, Outcomes, StubbornBackend
from tokenrelay.backends import Message, Pause, ScriptedBackend
from tokenrelay.errors import RunLimitError, StoreUnavailable
from tokenrelay.events import ErrorEvent, Event, FinishEvent, ReasoningDelta, TextDelta, ToolCallStart
from tokenrelay.messages import TextPart, answer_parts
from tokenrelay.protocols.base import StreamContext
from tokenrelay.protocols.seed import SeedProtocol
from tokenrelay.runs import HEARTBEAT, RunManager, RunOutcome, Subscription
from tokenrelay.runs.base import COMPACT_EVERY
from tokenrelay.stores import MemoryRunStore, RunInfo, StoredEvent

HELLO = [Message("user", "hello")]
SHUTDOWN = ErrorEvent("shutdown", "the server is shutting down", retryable=True)


async def test_shutdown_gives_runs_their_grace_then_ends_the_rest_with_a_retryable_error_saving_them() -> None:
    outcomes = Outcomes()
    quick = HeldBackend([TextDelta("q"), TextDelta("uick"), FinishEvent("stop")], hold_before=TextDelta("uick"))
    manager = RunManager(quick, MemoryRunStore(), on_finish=outcomes)
    finishing = await manager.start(HELLO, user_id="u", conversation_id="quick")
    await asyncio.wait_for(quick.held.wait(), 5)
    slow = RunManager(ScriptedBackend([TextDelta("par"), TextDelta("tial"), Pause(60)]), manager.store)
    slow.on_finish = outcomes
    endless = await slow.start(HELLO, user_id="u", conversation_id="slow")
    sub = await slow.subscribe(endless.run_id)
    assert texts(await asyncio.wait_for(anext_batch(sub), 5)) == "partial"

    # The quick run ends within the grace by itself; the endless one is ended when the grace is over.
    quick.gate.set()
    await asyncio.wait_for(manager.shutdown(grace_s=5), 6)
    started = time.monotonic()
    await asyncio.wait_for(slow.shutdown(grace_s=0.2), 5)
    assert time.monotonic() - started >= 0.2
    assert [e.event for e in await collect(manager, finishing.run_id)][-1] == FinishEvent("stop")
    rest = await asyncio.wait_for(anext_batch(sub), 2)
    assert [e.event for e in rest] == [SHUTDOWN, FinishEvent("error")]
    await sub.aclose()
    ended = {o.conversation_id: o for o in outcomes}
    assert (ended["quick"].text, ended["quick"].reason) == ("quick", "stop")
    assert (ended["slow"].text, ended["slow"].reason, ended["slow"].error) == ("partial", "error", SHUTDOWN)
    assert (manager.active_runs, slow.active_runs, slow.subscribers) == (0, 0, 0)
    with pytest.raises(RunLimitError, match="shutting down"):
        await slow.start(HELLO, user_id="u", conversation_id="late")


async def test_shutdown_ends_a_run_that_never_took_its_first_step_the_same_way() -> None:
    outcomes = Outcomes()
    backend = ScriptedBackend([TextDelta("never")])
    manager = RunManager(backend, MemoryRunStore(), on_finish=outcomes)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await manager.shutdown()  # awaited at once: the run's task has not taken a step
    assert backend.calls == []
    assert [e.event for e in await collect(manager, info.run_id)] == [SHUTDOWN, FinishEvent("error")]
    assert [(o.text, o.reason) for o in outcomes] == [("", "error")]


async def test_an_error_then_a_finish_from_the_backend_ends_as_an_error() -> None:
    outcomes = Outcomes()
    error = ErrorEvent("content_filter", "refused", retryable=False)
    manager = RunManager(ScriptedBackend([TextDelta("a"), error, FinishEvent("stop")]), MemoryRunStore())
    manager.on_finish = outcomes
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = [e.event for e in await asyncio.wait_for(collect(manager, info.run_id), 5)]
    assert events[-2:] == [error, FinishEvent("error")]
    assert (outcomes[0].reason, outcomes[0].error) == ("error", error)


async def test_a_save_that_hangs_is_given_up_and_the_finish_says_it_was_not_saved() -> None:
    async def hanging(outcome: RunOutcome) -> None:
        await asyncio.Event().wait()

    manager = RunManager(ScriptedBackend([TextDelta("a")]), MemoryRunStore(), on_finish=hanging, save_timeout_s=0.1)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = await asyncio.wait_for(collect(manager, info.run_id), 2)
    assert events[-1].event == FinishEvent("stop", saved=False)


async def test_the_seed_done_frame_says_saved_false_only_when_saving_failed() -> None:
    async def broken(outcome: RunOutcome) -> None:
        raise RuntimeError("history is down")

    ctx = StreamContext(run_id="r", conversation_id="c", user_id="u")
    frames = []
    for on_finish in (broken, Outcomes()):
        manager = RunManager(ScriptedBackend([TextDelta("a")]), MemoryRunStore(), on_finish=on_finish)
        info = await manager.start(HELLO, user_id="u", conversation_id="c")
        events = await asyncio.wait_for(collect(manager, info.run_id), 5)
        frames.append(SeedProtocol().encoder(ctx).encode(events[-1:]))
    assert frames == [
        b'id: 2\ndata: {"done": true, "finish_reason": "stop", "run_id": "r", "conversation_id": "c", "saved": false}\n\n',
        b'id: 2\ndata: {"done": true, "finish_reason": "stop", "run_id": "r", "conversation_id": "c"}\n\n',
    ]


async def test_appends_the_store_refuses_for_a_while_are_retried_without_a_gap() -> None:
    store = FailingStore()
    backend = ScriptedBackend([TextDelta(str(i)) for i in range(5)])
    manager = RunManager(backend, store, append_retry_s=5)
    store.append_failures = 3
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    await asyncio.wait_for(manager.wait(info.run_id), 5)
    events = await collect(manager, info.run_id)
    assert store.failed_appends == 3
    assert texts(events) == "01234"
    assert [e.event for e in await store.read(info.run_id, 0, 0)] == [
        *(TextDelta(str(i)) for i in range(5)),
        FinishEvent("stop"),
    ]


async def test_a_store_that_stays_down_ends_the_run_here_in_bounded_time_and_its_viewers_see_the_end() -> None:
    outcomes = Outcomes()
    store = FailingStore()
    backend = HeldBackend([TextDelta("a"), TextDelta("b"), Pause(60)], hold_before=TextDelta("b"))
    manager = RunManager(backend, store, on_finish=outcomes, append_retry_s=0.3, heartbeat_s=0.2)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    assert texts(await asyncio.wait_for(anext_batch(sub), 5)) == "a"
    store.append_failures = math.inf  # the store goes down for good, mid-answer
    started = time.monotonic()
    backend.gate.set()
    await asyncio.wait_for(manager.wait(info.run_id), 3)
    assert time.monotonic() - started < 2  # the retry budget and a try at the ending, no more
    rest = [e.event for e in await asyncio.wait_for(anext_batch(sub), 2)]
    error, finish = rest
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable, error.retry_after) == ("store_unavailable", True, 2.0)
    assert finish == FinishEvent("error")
    await sub.aclose()
    # What the viewer saw is what was saved: "a", and "b" (the backend said it; the store never took it).
    assert (outcomes[0].text, outcomes[0].reason, outcomes[0].error) == ("ab", "error", error)
    assert (manager.active_runs, manager.subscribers) == (0, 0)


async def test_a_store_that_cannot_be_read_ends_the_stream_with_a_retryable_error_and_the_finish() -> None:
    store = FailingStore()
    backend = HeldBackend([TextDelta("a"), TextDelta("b")], hold_before=TextDelta("b"))
    manager = RunManager(backend, store)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    first = await asyncio.wait_for(anext_batch(sub), 5)
    store.reads_fail = True
    backend.gate.set()
    rest = await asyncio.wait_for(anext_batch(sub), 2)
    error = rest[0].event
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable, error.retry_after) == ("store_unavailable", True, 2.0)
    assert rest[1].event == FinishEvent("error")
    # Under the viewer's own cursor: a resume from their id asks for exactly what it has not seen.
    assert [e.seq for e in rest] == [first[-1].seq] * 2
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(sub.__anext__(), 2)
    await sub.aclose()
    store.reads_fail = False
    assert texts(await asyncio.wait_for(collect(manager, info.run_id, after=first[-1].seq), 5)) == "b"


async def test_a_cancel_asking_a_store_that_does_not_answer_keeps_its_timeout() -> None:
    store = FailingStore()
    manager = RunManager(ScriptedBackend([]), store)
    store.hang_cancel_requests = True
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(manager.cancel("elsewhere", timeout=0.1), 2)
    assert time.monotonic() - started < 1


async def test_a_cancel_sent_elsewhere_returns_after_its_timeout_when_the_end_never_shows() -> None:
    store = FailingStore()
    manager = RunManager(ScriptedBackend([]), store)
    await store.create(RunInfo("elsewhere", "u", "c", "scripted", 0.0))  # a run another instance drives
    store.hang_reads = True  # its end never shows here
    started = time.monotonic()
    assert await asyncio.wait_for(manager.cancel("elsewhere", timeout=0.1), 2) is True  # it was asked
    assert time.monotonic() - started < 1


async def test_a_stubborn_backend_still_ends_with_its_shutdown_error_once_it_lets_go() -> None:
    backend = StubbornBackend()
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    await asyncio.wait_for(anext_batch(sub), 5)
    shutdown = asyncio.create_task(manager.shutdown())
    await asyncio.wait_for(backend.cancelled.wait(), 2)
    assert not shutdown.done()  # it waits for the run's end to be recorded
    backend.release.set()
    await asyncio.wait_for(shutdown, 2)
    assert [e.event for e in await asyncio.wait_for(anext_batch(sub), 2)] == [SHUTDOWN, FinishEvent("error")]
    await sub.aclose()


async def anext_batch(sub: Subscription) -> list[StoredEvent]:
    """The next batch of events from a subscription, heartbeats skipped."""
    while True:
        item = await sub.__anext__()
        if item is not HEARTBEAT:
            assert isinstance(item, list)
            return item


async def test_a_long_answer_keeps_every_text_and_its_place_among_the_other_events() -> None:
    # The transcript joins its texts as they pile up (COMPACT_EVERY): the outcome is still every delta, in order,
    # with the reasoning and the tool call between the texts they came between.
    before = [TextDelta(f"a{i} ") for i in range(COMPACT_EVERY * 2 + 7)]
    after = [TextDelta(f"b{i} ") for i in range(COMPACT_EVERY + 3)]
    middle: list[Event] = [ReasoningDelta("thinking"), ToolCallStart("c1", "lookup")]
    outcomes = Outcomes()
    script: list[Event] = [*before, *middle, *after, FinishEvent("stop")]
    manager = RunManager(ScriptedBackend(script), MemoryRunStore(), on_finish=outcomes)
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    events = [e.event for e in await asyncio.wait_for(collect(manager, info.run_id), 10)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(t.text for t in before + after)
    (outcome,) = outcomes
    assert outcome.text == "".join(t.text for t in before + after)
    assert [type(p).__name__ for p in outcome.parts][:1] == ["TextPart"]
    texts = [p for p in outcome.parts if isinstance(p, TextPart)]
    assert [t.text for t in texts] == ["".join(t.text for t in before), "".join(t.text for t in after)]
    assert outcome.parts == answer_parts([t.text for t in before + after], [(len(before), e) for e in middle])
