"""The in-process store's chunked log against a plain list: the same items, reads and joins, whatever it holds."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.coalescing import join_texts
from tokenrelay.events import FinishEvent, ToolCallStart, UsageEvent
from tokenrelay.stores.memory_log import CHUNK, EventLog, Item, _Texts

_texts = st.one_of(
    st.sampled_from(["", "a", " the", "~ jk", "é", "日本", "😀"]),  # short, empty, two and four bytes a character
    st.text(max_size=12),
    st.text(min_size=250, max_size=300),  # around the length a byte can hold
)
_others = st.sampled_from([UsageEvent(1, 2), ToolCallStart("call_1", "search"), FinishEvent("stop")])
_items = st.lists(st.one_of(_texts, _texts, _texts, _others), max_size=5 * CHUNK + 3)


def _log(items: list[Item]) -> EventLog:
    log = EventLog()
    for item in items:
        log.append(item)
    return log


@settings(max_examples=150, deadline=None)
@given(_items)
def test_every_read_of_the_chunked_log_is_the_plain_lists(items: list[Item]) -> None:
    log = _log(items)
    assert len(log) == len(items)
    assert bool(log) == bool(items)
    assert [log.item(seq) for seq in range(1, len(items) + 1)] == items
    for after in range(len(items) + 1):
        assert list(log.items(after)) == list(enumerate(items[after:], after + 1))
        assert log.coalesced(after) == join_texts(enumerate(items[after:], after + 1))


def test_a_full_chunk_of_short_texts_is_kept_as_one_string_and_a_byte_each() -> None:
    log = _log(["~ a", "~ bc"] * CHUNK)  # two chunks' worth
    assert len(log.chunks) == 2
    assert log.tail == []
    block = log.chunks[0]
    assert isinstance(block, _Texts)
    assert block.text == "~ a~ bc" * (CHUNK // 2)
    assert len(block.lengths) == CHUNK
    # What it replaces: a pointer a delta, and the list's own header.
    assert sys.getsizeof(block.text) + sys.getsizeof(block.lengths) < sys.getsizeof(["x"] * CHUNK)


def test_a_chunk_that_would_not_be_smaller_joined_stays_a_list() -> None:
    other = _log(["a"] * (CHUNK - 1) + [UsageEvent(1, 2)])  # not only texts
    long = _log(["a"] * (CHUNK - 1) + ["x" * 256])  # a length a byte cannot hold
    wide = _log([" token"] * (CHUNK - 1) + ["😀"])  # one wide character: the whole string 4 bytes a character
    for log in (other, long, wide):
        assert len(log.chunks) == 1
        assert isinstance(log.chunks[0], list)
    assert isinstance(_log(["é"] * CHUNK).chunks[0], _Texts)  # one byte a character still
    assert isinstance(_log(["a"] * (CHUNK - 1) + ["😀"]).chunks[0], _Texts)  # wide, but still under the pointers
