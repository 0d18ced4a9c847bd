"""The in-process store's compact event log gives back exactly what was appended, however it stored it."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.coalescing import join_texts
from tokenrelay.events import Event, FinishEvent, StoredEvent, TextDelta, ToolCallStart, UsageEvent
from tokenrelay.stores.memory_log import COMPACT_EVERY, EventLog

texts = st.one_of(st.text(max_size=6), st.text(min_size=250, max_size=300))  # short tokens, and some past 255
others = st.sampled_from([UsageEvent(1, 2), ToolCallStart("c1", "lookup"), FinishEvent("stop")])
items = st.lists(st.one_of(texts, texts, texts, others), max_size=3 * COMPACT_EVERY + 7)


def _naive(appended: list[Event | str], after: int) -> list[StoredEvent]:
    return [
        StoredEvent(seq, TextDelta(item) if isinstance(item, str) else item)
        for seq, item in enumerate(appended, 1)
        if seq > after
    ]


def _filled(appended: list[Event | str], batch: int) -> EventLog:
    log = EventLog()
    for start in range(0, len(appended), batch):
        log.tail.extend(appended[start : start + batch])  # as the store appends a batch, then compacts
        log.compact_if_full()
    return log


@settings(max_examples=60, deadline=None)
@given(items, st.integers(1, 40), st.data())
def test_every_read_gives_back_what_was_appended(appended: list[Event | str], batch: int, data: st.DataObject) -> None:
    log = _filled(appended, batch)
    assert len(log) == len(appended)
    for after in {0, len(appended), *data.draw(st.lists(st.integers(0, len(appended)), max_size=12))}:
        assert log.stored(after) == _naive(appended, after)
        assert log.coalesced(after) == join_texts(enumerate(appended[after:], after + 1))


def test_a_long_answer_costs_less_than_a_pointer_a_delta() -> None:
    tokens = [sys.intern(f" w{i % 50}") for i in range(10 * COMPACT_EVERY)]  # shared, as the backends keep them
    log = _filled(tokens, 1)
    kept = sys.getsizeof(log.tail) + sum(
        sys.getsizeof(b) + sys.getsizeof(b.text) + sys.getsizeof(b.lengths) for b in log._blocks
    )
    as_list = sys.getsizeof(list(tokens))
    assert kept < 0.8 * as_list, (kept, as_list)
    assert log.stored(5 * COMPACT_EVERY + 3)[0] == StoredEvent(
        5 * COMPACT_EVERY + 4, TextDelta(tokens[5 * COMPACT_EVERY + 3])
    )


def test_a_decision_appended_one_by_one_lands_after_the_texts() -> None:
    log = EventLog()
    for i in range(COMPACT_EVERY - 1):
        log.append(f"t{i}")
    log.append(FinishEvent("stop"))
    assert len(log) == COMPACT_EVERY
    assert not log.tail  # compacted, as a whole
    assert log.coalesced(0) == [
        StoredEvent(COMPACT_EVERY - 1, TextDelta("".join(f"t{i}" for i in range(COMPACT_EVERY - 1)))),
        StoredEvent(COMPACT_EVERY, FinishEvent("stop")),
    ]
    assert log.coalesced(COMPACT_EVERY - 2) == [
        StoredEvent(COMPACT_EVERY - 1, TextDelta(f"t{COMPACT_EVERY - 2}")),
        StoredEvent(COMPACT_EVERY, FinishEvent("stop")),
    ]
