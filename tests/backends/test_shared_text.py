"""Deltas read on the fast path share one string per distinct short text: a run keeps every delta, so a token's
text costs a pointer rather than a new string each time it recurs. The events are the same."""

from __future__ import annotations

import orjson

from tokenrelay.backends._wire import shared_text
from tokenrelay.backends.anthropic import MessagesWireTranslator
from tokenrelay.backends.openai_chat import ChatWireTranslator
from tokenrelay.events import ReasoningDelta, TextDelta


def _text(event: object) -> str:
    assert isinstance(event, TextDelta | ReasoningDelta)
    return event.text


def _chunk(delta: dict[str, str]) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def test_two_streams_keep_the_same_token_as_one_string() -> None:
    first, second = ChatWireTranslator(), ChatWireTranslator()
    a = first.feed(orjson.loads(_chunk({"content": " the"})))
    b = second.feed(orjson.loads(_chunk({"content": " the"})))
    assert a == b == [TextDelta(" the")]
    assert _text(a[0]) is _text(b[0])


def test_reasoning_is_shared_too_and_long_texts_are_left_alone() -> None:
    long = "x" * 200
    got = [
        ChatWireTranslator().feed(orjson.loads(_chunk({"reasoning_content": " so", "content": long}))) for _ in range(2)
    ]
    assert got[0] == got[1] == [ReasoningDelta(" so"), TextDelta(long)]
    assert _text(got[0][0]) is _text(got[1][0])
    assert _text(got[0][1]) is not _text(got[1][1])


def test_anthropic_text_deltas_are_shared() -> None:
    event = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" ok"}}'
    a, b = (MessagesWireTranslator().feed(orjson.loads(event)) for _ in range(2))
    assert a == b == [TextDelta(" ok")]
    assert _text(a[0]) is _text(b[0])


def test_anything_but_a_short_str_is_returned_as_it_is() -> None:
    class Text(str):
        pass

    odd = Text("ab")
    assert shared_text(odd) is odd
    assert shared_text(5) == 5
