"""The decoder's (event, data) reading, the upstream readers' per-token path: the same events, type and data, as
the frozen reference decoder gives on any stream cut anywhere (invalid UTF-8 included), and the same state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sse_reference import ReferenceDecoder
from tests.sse_streams import CUTS, NOISE, chunked, fields, lf_streams, streams
from tokenrelay.sse import ServerSentEvent, SSEDecoder

_field = fields("event: ping", "data: [DONE]")


def _pairs(items: list[object]) -> list[tuple[str, str]]:
    return [(e.event, e.data) for e in items if isinstance(e, ServerSentEvent)]


@settings(max_examples=400, deadline=None)
@given(stream=st.one_of(streams(_field, unfinished_tail=False), lf_streams(_field)), noise=NOISE, cuts=CUTS)
def test_feed_data_gives_the_reference_decoders_events_on_any_chunking(
    stream: str, noise: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    chunks = chunked(stream, noise, cuts)
    new, old = SSEDecoder(), ReferenceDecoder()
    for chunk in chunks:
        assert new.feed_data(chunk) == _pairs(old.feed(chunk))
        assert (new.last_event_id, new.retry) == (old.last_event_id, old.retry)


def test_feed_data_returns_plain_pairs_and_no_comments() -> None:
    decoder = SSEDecoder(comments=True)
    got = decoder.feed_data(b': ping\n\nevent: delta\ndata: {"a":1}\n\ndata: x\ndata: y\nid: 7\n\n')
    assert got == [("delta", '{"a":1}'), ("message", "x\ny")]
    assert all(type(item) is tuple for item in got)
    assert decoder.last_event_id == "7"


def test_a_character_split_across_chunks_decodes_whole_on_both_readings() -> None:
    raw = "data: caf\u00e9 \u20ac\n\n".encode()
    for cut in range(1, len(raw)):
        decoder = SSEDecoder()
        assert decoder.feed_data(raw[:cut]) + decoder.feed_data(raw[cut:]) == [("message", "caf\u00e9 \u20ac")]
