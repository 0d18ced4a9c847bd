"""The decoder's (event, data) reading, the upstream readers' per-token path: the same events, type and data, as
the frozen reference decoder gives on any stream cut anywhere (invalid UTF-8 included), and the same state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sse_reference import ReferenceDecoder
from tokenrelay.sse import ServerSentEvent, SSEDecoder

_line_end = st.sampled_from(["\n", "\r", "\r\n"])
_value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
_field = st.one_of(
    st.tuples(st.sampled_from(["data", "event", "id", "retry", "", "x"]), _value).map(lambda t: f"{t[0]}: {t[1]}"),
    st.builds(lambda v: f"data:{v}", _value),
    st.builds(lambda v: f":{v}", _value),
    st.sampled_from(["data", "retry: 10", "id: a\0b", "data:  x", "event: ping", "data: [DONE]"]),
)
_stream = st.tuples(
    st.booleans(), st.lists(st.one_of(st.tuples(_field, _line_end).map("".join), _line_end), max_size=25)
).map(lambda t: ("\ufeff" if t[0] else "") + "".join(t[1]))
_lf_stream = st.lists(st.one_of(_field.map(lambda f: f + "\n"), st.just("\n")), max_size=25).map("".join)
_noise = st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=3)), max_size=4)


def _pairs(items: list[object]) -> list[tuple[str, str]]:
    return [(e.event, e.data) for e in items if isinstance(e, ServerSentEvent)]


@settings(max_examples=400, deadline=None)
@given(
    stream=st.one_of(_stream, _lf_stream),
    noise=_noise,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_feed_data_gives_the_reference_decoders_events_on_any_chunking(
    stream: str, noise: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    raw = stream.encode("utf-8")
    for at, junk in noise:
        at %= len(raw) + 1
        raw = raw[:at] + junk + raw[at:]
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
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
