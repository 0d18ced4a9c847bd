"""How a message is written to SQL and read back, character for character.

A Python ``str`` may hold characters no database column takes: PostgreSQL's ``text`` refuses NUL (U+0000), and a
lone surrogate (U+D800 to U+DFFF, which a model can emit one half of) has no UTF-8 form, so neither SQLite nor
PostgreSQL can store it. The encoding, documented here because it is on disk:

- ``messages.content`` is stored as it is when it holds neither; otherwise as a JSON string literal made of ASCII
  only (``"a\\u0000b"``, ``"\\ud83d"``), and ``messages.encoding`` says ``json``. ``NULL`` (every row written before
  the column existed) is plain text. :func:`decode_text` of :func:`encode_text` is the identity on every ``str``.
- ``messages.parts`` is a JSON array of the message's parts (:func:`tokenrelay.messages.part_to_dict`). JSON text
  escapes NUL; a lone surrogate is written as its ``\\uXXXX`` escape. The text parts of an answer, whose text is
  already the content, are stored as ``{"type": "text", "length": N}`` (N characters of the content, in order),
  so an answer's text is kept once. ``NULL``: the message is its text alone.
- ``conversations.title`` is a label made from the first question: a character it cannot hold becomes U+FFFD.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final

from tokenrelay.messages import Part, TextPart, part_from_dict, part_to_dict, text_of

__all__ = ["JSON_ENCODING", "decode_parts", "decode_text", "encode_parts", "encode_text", "storable"]

log = logging.getLogger("tokenrelay.history")

JSON_ENCODING: Final = "json"
"""``messages.encoding`` of a content stored as a JSON string literal."""

_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with each character no database can hold replaced by U+FFFD (for labels, never for content)."""
    return _UNSTORABLE.sub("\ufffd", text)


def encode_text(text: str) -> tuple[str, str | None]:
    """``(stored, encoding)``: ``text`` itself when a database can hold it, else its JSON literal and the marker."""
    if _UNSTORABLE.search(text) is None:
        return text, None
    return json.dumps(text, ensure_ascii=True), JSON_ENCODING


def decode_text(stored: str, encoding: str | None) -> str:
    """The inverse of :func:`encode_text`."""
    if encoding is None:
        return stored
    if encoding != JSON_ENCODING:
        raise ValueError(f"unknown content encoding {encoding!r}")
    value = json.loads(stored)
    if not isinstance(value, str):
        raise ValueError("an encoded content must be a JSON string")
    return value


def _dumps(value: Any) -> str:
    # NUL is always escaped by JSON; non-ASCII stays readable unless a lone surrogate forces escapes.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")) if _SURROGATE.search(text) else text


def encode_parts(parts: tuple[Part, ...], content: str) -> str | None:
    """The ``parts`` column of a message: ``None`` when it has none."""
    if not parts:
        return None
    by_length = text_of(parts) == content  # the text is kept once, in the content
    items = [
        {"type": "text", "length": len(p.text)} if by_length and isinstance(p, TextPart) else part_to_dict(p)
        for p in parts
    ]
    return _dumps(items)


def decode_parts(stored: str | None, content: str) -> tuple[Part, ...]:
    """The inverse of :func:`encode_parts`. A column that cannot be read is logged, and the message is its text."""
    if stored is None:
        return ()
    try:
        items = json.loads(stored)
        if not isinstance(items, list):
            raise ValueError("not a JSON array")
        out: list[Part] = []
        at = 0
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("a part must be a JSON object")
            length = item.get("length") if item.get("type") == "text" else None
            if isinstance(length, int):
                out.append(TextPart(content[at : at + length]))
                at += length
            else:
                out.append(part_from_dict(item))
        return tuple(out)
    except ValueError as exc:  # json.JSONDecodeError is one
        log.warning("a message's parts could not be read (%s); keeping its text only", exc)
        return ()
