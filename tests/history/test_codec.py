"""The SQL history's encoding of what a database cannot hold: reversible for every string, stable on disk."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.history.codec import decode_parts, decode_text, encode_parts, encode_text, storable
from tokenrelay.messages import FinishPart, ReasoningPart, TextPart, ToolCallPart, text_of

ANY_TEXT = st.text(
    st.one_of(st.characters(exclude_categories=[]), st.sampled_from(["\x00", "\ud800", "\udfff", "\\", '"']))
)


@given(ANY_TEXT)
def test_every_string_decodes_to_itself_and_is_stored_as_text_a_database_takes(text: str) -> None:
    stored, encoding = encode_text(text)
    assert decode_text(stored, encoding) == text
    stored.encode("utf-8")  # a lone surrogate would raise here: SQLite and PostgreSQL could not take it
    assert "\x00" not in stored  # PostgreSQL's text refuses NUL
    if encoding is None:
        assert stored == text  # what a database can hold is stored as it is, readable by any tool


@given(st.lists(ANY_TEXT, max_size=5))
def test_parts_decode_to_themselves_and_the_answers_text_is_kept_once(texts: list[str]) -> None:
    parts = (*(TextPart(t) if i % 3 else ReasoningPart(t) for i, t in enumerate(texts)), FinishPart("stop"))
    content = text_of(parts)
    stored = encode_parts(parts, content)
    assert stored is not None
    stored.encode("utf-8")
    assert "\x00" not in stored
    assert decode_parts(stored, content) == parts
    if any(isinstance(p, TextPart) and len(p.text) > 20 for p in parts):
        assert '"length"' in stored


def test_the_encoding_on_disk() -> None:
    assert encode_text("plain é") == ("plain é", None)
    assert encode_text("a\x00b") == ('"a\\u0000b"', "json")
    assert encode_text("\ud83d!") == ('"\\ud83d!"', "json")
    assert encode_parts((), "") is None
    assert encode_parts((TextPart("hi"), FinishPart("stop")), "hi") == (
        '[{"type":"text","length":2},{"type":"finish","reason":"stop"}]'
    )
    # Parts whose text is not the content keep their text.
    assert encode_parts((ToolCallPart("c", "f", "{}"),), "") == (
        '[{"type":"tool-call","call_id":"c","name":"f","arguments":"{}"}]'
    )
    assert storable("a\x00b\ud800") == "a\ufffdb\ufffd"


def test_an_unreadable_parts_column_leaves_the_message_its_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenrelay.history"):
        assert decode_parts("{not json", "text") == ()
        assert decode_parts('[{"type": "hologram"}]', "text") == ()
    assert len([r for r in caplog.records if "could not be read" in r.message]) == 2
    with pytest.raises(ValueError, match="unknown content encoding"):
        decode_text("x", "rot13")
