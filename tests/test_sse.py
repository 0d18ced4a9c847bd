from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sse_reference import ReferenceDecoder
from tests.sse_streams import CUTS, NOISE, chunked, fields, lf_streams, streams
from tokenrelay.sse import (
    PING,
    Comment,
    ServerSentEvent,
    SSEDecoder,
    aiter_sse,
    encode,
    encode_comment,
    frame,
    frame_format,
    iter_sse,
    retry_hint,
)


def decode(*chunks: bytes | str, comments: bool = False) -> list[ServerSentEvent | Comment]:
    decoder = SSEDecoder(comments=comments)
    out: list[ServerSentEvent | Comment] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


def test_lf_cr_and_crlf_line_endings_are_equivalent() -> None:
    expected = [ServerSentEvent("a"), ServerSentEvent("b")]
    assert decode(b"data: a\n\ndata: b\n\n") == expected
    assert decode(b"data: a\r\rdata: b\r\r") == expected
    assert decode(b"data: a\r\n\r\ndata: b\r\n\r\n") == expected
    assert decode(b"data: a\r\n\rdata: b\n\r\n") == expected


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    # If the CR and LF were two endings, the LF would be an empty line and dispatch a second, empty event early.
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [ServerSentEvent("a\nb")]


def test_leading_bom_is_stripped_once() -> None:
    assert decode("\ufeffdata: x\n\n".encode()) == [ServerSentEvent("x")]
    assert decode(b"\xef\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent("x")]
    # A second BOM is content: the line's field name is then "\ufeffdata", which is ignored.
    assert decode("\ufeff\ufeffdata: x\n\n".encode()) == []


def test_multiline_data_is_joined_with_lf() -> None:
    assert decode(b"data: one\ndata: two\ndata:\ndata:  four\n\n") == [ServerSentEvent("one\ntwo\n\n four")]


def test_event_id_and_retry_fields() -> None:
    events = decode(b"event: update\nid: 42\nretry: 1500\ndata: x\n\n")
    assert events == [ServerSentEvent("x", event="update", id="42", retry=1500)]


def test_id_persists_and_an_id_with_nul_is_ignored() -> None:
    events = decode(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\ndata: c\n\n")
    assert [e.id for e in events if isinstance(e, ServerSentEvent)] == ["1", "1", "1"]


def test_retry_must_be_digits_only() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"retry: 12a\nretry: -5\nretry: 1.5\nretry:\ndata: x\n\n")
    assert decoder.retry is None
    decoder.feed(b"retry: 3000\n\n")
    assert decoder.retry == 3000


def test_comments_are_skipped_or_reported() -> None:
    assert decode(b": ping\n\ndata: x\n\n") == [ServerSentEvent("x")]
    assert decode(b": ping\n\n:\n", comments=True) == [Comment("ping"), Comment("")]


def test_field_without_colon_and_unknown_fields() -> None:
    # "data" alone appends "" + LF to the buffer; the trailing LF is removed and an event with empty data fires.
    assert decode(b"data\n\n") == [ServerSentEvent("")]
    assert decode(b"data\ndata\n\n") == [ServerSentEvent("\n")]
    assert decode(b"foo: bar\ndata: x\n\n") == [ServerSentEvent("x")]


def test_space_after_colon_is_removed_once() -> None:
    assert decode(b"data:x\n\ndata:  y\n\n") == [ServerSentEvent("x"), ServerSentEvent(" y")]


def test_blank_line_without_data_dispatches_nothing_but_resets_event_type() -> None:
    assert decode(b"event: a\n\ndata: x\n\n") == [ServerSentEvent("x", event="message")]


def test_unfinished_event_at_end_of_stream_is_discarded() -> None:
    assert decode(b"data: done\n\ndata: partial\n") == [ServerSentEvent("done")]
    assert decode(b"data: done\n\ndata: partial") == [ServerSentEvent("done")]


def test_multibyte_utf8_split_inside_a_character() -> None:
    raw = "data: héllo — 世界 🎉\n\n".encode()
    for cut in range(len(raw)):
        assert decode(raw[:cut], raw[cut:]) == [ServerSentEvent("héllo — 世界 🎉")], cut


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode(b"data: \xff\n\n") == [ServerSentEvent("\ufffd")]


def test_long_line_a_byte_at_a_time() -> None:
    raw = b"data: " + b"x" * 20_000 + b"\n\n"
    decoder = SSEDecoder()
    out = []
    for i in range(len(raw)):
        out.extend(decoder.feed(raw[i : i + 1]))
    assert out == [ServerSentEvent("x" * 20_000)]


def test_encoder_round_trips() -> None:
    text = encode("line one\nline two\r\nline three", event="e", id=7, retry=100) + encode_comment("hb")
    assert decode(text.encode(), comments=True) == [
        ServerSentEvent("line one\nline two\nline three", event="e", id="7", retry=100),
        Comment("hb"),
    ]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_encoder_refuses_ids_a_decoder_would_mangle(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode("x", id=bad)


def test_iter_sse_over_chunks() -> None:
    assert list(iter_sse([b"data: a\n", b"\ndata: b\n\n"])) == [ServerSentEvent("a"), ServerSentEvent("b")]


def test_iter_sse_drops_comments_and_the_unfinished_tail() -> None:
    assert list(iter_sse([b": ping\n\ndata: a\n\n", b"data: tail"])) == [ServerSentEvent("a")]


# --- aiter_sse: the same decoder over an async byte stream ----------------------------------------------------


async def achunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def adecode(*chunks: bytes) -> list[ServerSentEvent]:
    return [event async for event in aiter_sse(achunks(*chunks))]


async def test_aiter_sse_joins_events_split_across_chunks() -> None:
    assert await adecode(b"da", b"ta: a", b"\n", b"\ndata: b\n\n") == [ServerSentEvent("a"), ServerSentEvent("b")]


async def test_aiter_sse_crlf_split_across_chunks_is_one_line_ending() -> None:
    assert await adecode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [ServerSentEvent("a\nb")]


async def test_aiter_sse_strips_a_bom_split_across_chunks() -> None:
    assert await adecode(b"\xef", b"\xbb\xbfdata: x\n\n") == [ServerSentEvent("x")]


async def test_aiter_sse_multibyte_characters_across_chunks() -> None:
    raw = "data: 世界 🎉\n\n".encode()
    assert await adecode(*(raw[i : i + 1] for i in range(len(raw)))) == [ServerSentEvent("世界 🎉")]


async def test_aiter_sse_skips_comments_and_keeps_id_and_retry() -> None:
    events = await adecode(b": ping\n\nid: 4\nretry: 250\nevent: e\ndata: x\n\n", b":\ndata: y\n\n")
    assert events == [ServerSentEvent("x", event="e", id="4", retry=250), ServerSentEvent("y", id="4")]


async def test_aiter_sse_ignores_an_id_with_nul() -> None:
    events = await adecode(b"id: 1\ndata: a\n\n", b"id: 2\x00\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


async def test_aiter_sse_discards_the_unfinished_event_at_the_end() -> None:
    assert await adecode(b"data: done\n\ndata: part", b"ial\n") == [ServerSentEvent("done")]


async def test_aiter_sse_yields_each_event_as_soon_as_its_blank_line_arrives() -> None:
    # A live stream: the second chunk is not sent until the first event has been seen.
    first_seen = asyncio.Event()

    async def live() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        await asyncio.wait_for(first_seen.wait(), 5)
        yield b"data: two\n\n"

    events = aiter_sse(live())
    assert await anext(events) == ServerSentEvent("one")
    first_seen.set()
    assert [e async for e in events] == [ServerSentEvent("two")]


# --- framing: the bytes every encoder and the response write --------------------------------------------------


def test_frames_decode_to_the_event_they_frame() -> None:
    assert frame(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert frame(b"x", 12) == b"id: 12\ndata: x\n\n"
    assert decode(frame(b"x", 12) + frame(b"y")) == [ServerSentEvent("x", id="12"), ServerSentEvent("y", id="12")]


def test_frame_format_builds_the_same_bytes_as_frame() -> None:
    assert frame_format(b'{"delta": %s}') % (3, b'"hi"') == frame(b'{"delta": "hi"}', 3)
    assert frame_format(b"[%s]", with_id=False) % b"1" == frame(b"[1]")
    assert frame_format(b"100%%") % 1 == frame(b"100%", 1)
    with pytest.raises(ValueError, match="single line"):
        frame_format(b"a\nb")


def test_ping_is_a_comment_and_retry_hint_dispatches_nothing() -> None:
    assert PING == b": ping\n\n"
    assert decode(PING, comments=True) == [Comment("ping")]
    decoder = SSEDecoder()
    assert decoder.feed(retry_hint(1500)) == []
    assert decoder.retry == 1500
    assert decoder.feed(frame(b"x")) == [ServerSentEvent("x", retry=1500)]
    with pytest.raises(ValueError, match="retry"):
        retry_hint(-1)


# --- the property: any chunking of any stream decodes to the same events as the whole -------------------------

_field = fields()
_stream = streams(_field, unfinished_tail=True)


@settings(max_examples=400, deadline=None)
@given(stream=_stream, cuts=CUTS)
def test_any_chunking_decodes_like_the_whole(stream: str, cuts: list[int]) -> None:
    chunks = chunked(stream, cuts=cuts)
    assert decode(*chunks, comments=True) == decode(stream.encode("utf-8"), comments=True)


@settings(max_examples=100, deadline=None)
@given(stream=_stream)
def test_byte_by_byte_decodes_like_the_whole(stream: str) -> None:
    raw = stream.encode("utf-8")
    assert decode(*(raw[i : i + 1] for i in range(len(raw))), comments=True) == decode(raw, comments=True)


@settings(max_examples=400, deadline=None)
@given(stream=st.one_of(_stream, lf_streams(_field)), noise=NOISE, cuts=CUTS)
def test_the_decoder_agrees_with_the_reference_decoder_on_any_chunking(
    stream: str, noise: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    chunks = chunked(stream, noise, cuts)  # bytes anywhere, invalid UTF-8 among them
    new, old = SSEDecoder(comments=True), ReferenceDecoder(comments=True)
    for chunk in chunks:
        assert new.feed(chunk) == old.feed(chunk)
        assert (new.last_event_id, new.retry) == (old.last_event_id, old.retry)
    assert new.close() == old.close()
