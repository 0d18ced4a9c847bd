"""Hypothesis strategies for SSE streams, and how the decoder property tests cut them: what ``tests/test_sse.py``
and ``tests/backends/test_wire_decoder.py`` share."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

LINE_END = st.sampled_from(["\n", "\r", "\r\n"])
VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
NOISE = st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=3)), max_size=4)
CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


def fields(*extra: str) -> st.SearchStrategy[str]:
    """One field line's text (no line end): named fields, bare ``data``, comments, and the ``extra`` samples."""
    return st.one_of(
        st.tuples(st.sampled_from(["data", "event", "id", "retry", "", "x"]), VALUE).map(lambda t: f"{t[0]}: {t[1]}"),
        st.builds(lambda v: f"data:{v}", VALUE),
        st.builds(lambda v: f":{v}", VALUE),
        st.sampled_from(["data", "retry: 10", "id: a\0b", "data:  x", *extra]),
    )


def streams(field: st.SearchStrategy[str], *, unfinished_tail: bool) -> st.SearchStrategy[str]:
    """Lines with any line ending, a BOM or not, and (``unfinished_tail``) perhaps a last line with none."""
    tail = st.one_of(st.just(""), field) if unfinished_tail else st.just("")
    lines = st.lists(st.one_of(st.tuples(field, LINE_END).map("".join), LINE_END), max_size=25)
    return st.tuples(st.booleans(), lines, tail).map(lambda t: ("\ufeff" if t[0] else "") + "".join(t[1]) + t[2])


def lf_streams(field: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Lines ending in LF only (the fast path's common case)."""
    return st.lists(st.one_of(field.map(lambda f: f + "\n"), st.just("\n")), max_size=25).map("".join)


def chunked(stream: str, noise: Sequence[tuple[int, bytes]] = (), cuts: Sequence[int] = ()) -> list[bytes]:
    """``stream`` as UTF-8 with the ``noise`` bytes put in (invalid UTF-8 among them), cut at ``cuts`` (positions
    taken modulo its length)."""
    raw = stream.encode("utf-8")
    for at, junk in noise:
        at %= len(raw) + 1
        raw = raw[:at] + junk + raw[at:]
    points = sorted({c % (len(raw) + 1) for c in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
