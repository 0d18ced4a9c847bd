"""A run's events in the in-process store, numbered from 1, kept compact.

A run keeps every event it sent for as long as it is kept (for resumes, and for a while after it finished), and text
deltas are nearly all of them: a long answer is thousands. Kept one by one, each costs a pointer in a list (and the
list's spare room) on top of its text — more than the text itself, for the short texts a model's tokens are. So the
log keeps its last :data:`COMPACT_EVERY` items as they came and, as they fill up, stores the older ones in blocks: a
run of consecutive texts becomes one string and the length of each text in it (a byte each, for texts shorter than
256 characters); any other event stays itself. What comes back out is the same either way: one item per sequence
id, or (:meth:`EventLog.coalesced`) the texts between two other events joined, as a subscriber reads them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Final

from tokenrelay.coalescing import join_texts
from tokenrelay.events import Event, StoredEvent, TextDelta

__all__ = ["COMPACT_EVERY", "EventLog"]

COMPACT_EVERY: Final = 256
"""How many items the log keeps as they came before it stores them in blocks."""

Item = Event | str  # a text delta is kept as its bare text


class _Texts:
    """Consecutive text deltas, joined: ``text`` and the length of each delta in it."""

    __slots__ = ("lengths", "text")

    def __init__(self, texts: Sequence[str]) -> None:
        self.text = "".join(texts)
        sizes = [len(t) for t in texts]
        self.lengths = array("B" if max(sizes) < 256 else "I", sizes)

    def __len__(self) -> int:
        return len(self.lengths)

    def pieces(self, first: int) -> Iterator[str]:
        """The deltas from the ``first``-th (0-based) on."""
        text, lengths = self.text, self.lengths
        start = sum(lengths[:first])
        for size in lengths[first:]:
            yield text[start : start + size]
            start += size

    def rest(self, first: int) -> str:
        """The deltas from the ``first``-th (0-based) on, joined."""
        return self.text[sum(self.lengths[:first]) :] if first else self.text


Block = _Texts | Event | str


class EventLog:
    """The events of one run; sequence id ``n`` is the ``n``-th appended."""

    __slots__ = ("_blocks", "_firsts", "_stored", "tail")

    def __init__(self) -> None:
        self._blocks: list[Block] = []
        self._firsts = array("I")  # the sequence id of each block's first item
        self._stored = 0  # how many items the blocks hold
        # The items after the blocks, as they came; the store appends here itself (the hot path), then calls
        # compact_if_full.
        self.tail: list[Item] = []

    def __len__(self) -> int:
        return self._stored + len(self.tail)

    def append(self, item: Item) -> None:
        self.tail.append(item)
        self.compact_if_full()

    def compact_if_full(self) -> None:
        tail = self.tail
        if len(tail) < COMPACT_EVERY:
            return
        blocks, firsts = self._blocks, self._firsts
        seq = self._stored + 1
        i, n = 0, len(tail)
        while i < n:
            j = i
            while j < n and type(tail[j]) is str:
                j += 1
            if j - i > 1:
                blocks.append(_Texts(tail[i:j]))  # type: ignore[arg-type]  # all str, by the loop above
                firsts.append(seq)
                seq += j - i
                i = j
            else:
                blocks.append(tail[i])
                firsts.append(seq)
                seq += 1
                i += 1
        self._stored = seq - 1
        self.tail = []

    def items(self, after: int) -> Iterator[tuple[int, Item]]:
        """``(seq, item)`` for every item after sequence id ``after``, one per id, in order."""
        stored = self._stored
        if after < stored:
            blocks, firsts = self._blocks, self._firsts
            for b in range(max(bisect_right(firsts, after + 1) - 1, 0), len(blocks)):
                block, first = blocks[b], firsts[b]
                if type(block) is _Texts:
                    skip = max(after + 1 - first, 0)
                    yield from enumerate(block.pieces(skip), first + skip)
                else:
                    yield first, block  # type: ignore[misc]  # an event or a single text
        yield from enumerate(self.tail[max(after - stored, 0) :], max(after, stored) + 1)

    def stored(self, after: int = 0) -> list[StoredEvent]:
        """The events after sequence id ``after``, one per id (a text as its :class:`TextDelta`)."""
        return [StoredEvent(seq, TextDelta(item) if type(item) is str else item) for seq, item in self.items(after)]  # type: ignore[arg-type]

    def coalesced(self, after: int) -> list[StoredEvent]:
        """The events after sequence id ``after``, consecutive texts joined (as :func:`.join_texts` joins them)."""
        stored = self._stored
        if after >= stored:
            tail = self.tail
            return join_texts(enumerate(tail[after - stored :], after + 1))
        return join_texts(self._joined_items(after))

    def _joined_items(self, after: int) -> Iterator[tuple[int, Item]]:
        blocks, firsts = self._blocks, self._firsts
        for b in range(max(bisect_right(firsts, after + 1) - 1, 0), len(blocks)):
            block, first = blocks[b], firsts[b]
            if type(block) is _Texts:
                skip = max(after + 1 - first, 0)
                yield first + len(block) - 1, block.rest(skip)  # one text with the id of its last delta
            else:
                yield first, block  # type: ignore[misc]
        yield from enumerate(self.tail, self._stored + 1)
