"""A run's events in the in-process store, numbered from 1, in chunks of :data:`CHUNK`.

A run keeps every event it sent for as long as it is kept (for resumes, and for ``ttl_s`` after it finished), and
text deltas are nearly all of them: a long answer is thousands. In one list each costs a pointer (and the list's
spare room), more than the text of a model's short tokens, and the list grows by reallocation: at a few KB a run
it leaves the small-object allocator for the heap, where growing lists by the thousand fragment it. So the log is
a list of chunks. The last chunk takes the appends as they come (the hot path: one list append); once it holds
``CHUNK`` items it is sealed, and a sealed chunk of texts only is kept as one string and a byte a text for their
lengths (``_Texts``). What comes back out is the same either way: one item per sequence id (:meth:`EventLog.items`),
or the texts between two other events joined (:meth:`EventLog.coalesced`), as a subscriber reads them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Final

from tokenrelay.coalescing import join_texts
from tokenrelay.events import Event, StoredEvent

__all__ = ["CHUNK", "EventLog", "Item"]

CHUNK: Final = 64
"""How many items a chunk holds: a sealed chunk of texts is one string of about CHUNK tokens and CHUNK bytes."""

Item = Event | str  # a text delta is kept as its bare text


class _Texts:
    """A sealed chunk of text deltas: ``text`` joined, and the length of each delta in ``lengths`` (a byte each)."""

    __slots__ = ("lengths", "text")

    def __init__(self, text: str, lengths: bytes) -> None:
        self.text = text
        self.lengths = lengths

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


Chunk = list[Item] | _Texts


def _sealed(items: list[Item]) -> Chunk:
    """A full chunk as it is kept: its texts joined, when it holds nothing else and that is smaller."""
    try:
        text = "".join(items)  # type: ignore[arg-type]  # TypeError: not only texts
        lengths = bytes(map(len, items))  # type: ignore[arg-type]  # ValueError: a text of 256 characters or more
    except (TypeError, ValueError):
        return items
    # One wide character (an emoji) makes the whole string 4 bytes a character: then the pointers may be smaller.
    if sys.getsizeof(text) > 8 * len(items) + 64:
        return items
    return _Texts(text, lengths)


class EventLog:
    """The events of one run; sequence id ``n`` is the ``n``-th appended.

    The store appends to :attr:`tail` itself and calls :meth:`seal` once it holds :data:`CHUNK` items (the hot
    path, inlined); :meth:`append` does both.
    """

    __slots__ = ("base", "chunks", "tail")

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []  # sealed, CHUNK items each
        self.base = 0  # how many items the sealed chunks hold
        self.tail: list[Item] = []  # the items after them, as they came (fewer than CHUNK)

    def __len__(self) -> int:
        return self.base + len(self.tail)

    def append(self, item: Item) -> None:
        tail = self.tail
        tail.append(item)
        if len(tail) >= CHUNK:
            self.seal()

    def seal(self) -> None:
        """Keep the full tail as a sealed chunk and start a new one."""
        self.chunks.append(_sealed(self.tail))
        self.base += len(self.tail)
        self.tail = []

    def item(self, seq: int) -> Item:
        """The item of sequence id ``seq`` (1-based, at most ``len(self)``)."""
        index = seq - 1 - self.base
        if index >= 0:
            return self.tail[index]
        chunk = self.chunks[(seq - 1) // CHUNK]
        offset = (seq - 1) % CHUNK
        return next(chunk.pieces(offset)) if type(chunk) is _Texts else chunk[offset]  # type: ignore[index]

    def items(self, after: int = 0) -> Iterator[tuple[int, Item]]:
        """``(seq, item)`` for every item after sequence id ``after``, one per id, in order."""
        return self._after(after, joined=False)

    def coalesced(self, after: int) -> list[StoredEvent]:
        """The events after sequence id ``after``, consecutive texts joined (as :func:`.join_texts` joins them)."""
        base = self.base
        if after >= base:  # a subscriber near the end: the tail alone, as a plain list
            return join_texts(enumerate(self.tail[after - base :], after + 1))
        return join_texts(self._after(after, joined=True))

    def _after(self, after: int, *, joined: bool) -> Iterator[tuple[int, Item]]:
        """``(seq, item)`` after ``after``; with ``joined``, a sealed chunk of texts as one text under the id of its
        last delta (``join_texts`` joins it with its neighbours)."""
        chunks = self.chunks
        for c in range(after // CHUNK, len(chunks)):  # none when ``after`` is in the tail
            chunk, first = chunks[c], c * CHUNK + 1
            skip = max(after + 1 - first, 0)
            if type(chunk) is not _Texts:
                yield from enumerate(chunk[skip:], first + skip)  # type: ignore[index]
            elif joined:
                yield first + CHUNK - 1, chunk.rest(skip)
            else:
                yield from enumerate(chunk.pieces(skip), first + skip)
        base = self.base
        yield from enumerate(self.tail[max(after - base, 0) :], max(after, base) + 1)
