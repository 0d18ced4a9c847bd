"""Server-Sent Events: the byte framing every stream writes, a pure text encoder and an incremental decoder.

All follow the WHATWG HTML Living Standard, section 9.2 "Server-sent events"
(https://html.spec.whatwg.org/multipage/server-sent-events.html). No I/O here: bytes in, events out. The thin
generators :func:`iter_sse` / :func:`aiter_sse` adapt any byte iterator.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "PING",
    "Comment",
    "SSEDecoder",
    "ServerSentEvent",
    "aiter_sse",
    "encode",
    "encode_comment",
    "frame",
    "frame_format",
    "iter_sse",
    "retry_hint",
]

PING: Final = b": ping\n\n"
"""The heartbeat: a comment, ignored by clients, that keeps proxies and load balancers from closing an idle stream."""


def frame(data: bytes, seq: int | None = None) -> bytes:
    """One event as bytes: an ``id:`` line when ``seq`` is given, one ``data:`` line, and the blank line that
    dispatches it. ``data`` must be a single line (JSON without raw newlines is)."""
    if seq is None:
        return b"data: %s\n\n" % data
    return b"id: %d\ndata: %s\n\n" % (seq, data)


def frame_format(data_format: bytes, *, with_id: bool = True) -> bytes:
    """:func:`frame` as a ``%``-format, for the per-token paths: built once, it formats a frame in one step.

    ``frame_format(b'{"delta": %s}') % (seq, text)`` is ``frame(b'{"delta": %s}' % text, seq)`` without the
    intermediate ``data`` bytes. With ``with_id`` the id is the format's first field. A literal ``%`` in
    ``data_format`` must be written ``%%``.
    """
    if b"\n" in data_format or b"\r" in data_format:
        raise ValueError("an SSE data line must be a single line")
    return (b"id: %d\ndata: " if with_id else b"data: ") + data_format + b"\n\n"


def retry_hint(ms: int) -> bytes:
    """A lone ``retry:`` field: how long a client should wait before reconnecting (EventSource honours it by
    itself). It dispatches no event."""
    if ms < 0:
        raise ValueError("retry must be a non-negative number of milliseconds")
    return b"retry: %d\n\n" % ms


# "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character pair, a single
# U+000A LINE FEED (LF) character, or a single U+000D CARRIAGE RETURN (CR) character." str.splitlines() would
# also split on U+2028, form feeds and more, which the spec does not allow.
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class Comment:
    text: str


def encode(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
) -> str:
    """One event as text, terminated by the blank line that dispatches it.

    Multi-line ``data`` becomes one ``data:`` field per line, which the decoder joins back with LF.
    """
    parts: list[str] = []
    if event is not None:
        _check_single_line("event", event)
        parts.append(f"event: {event}\n")
    if id is not None:
        id = str(id)
        _check_single_line("id", id)
        if "\0" in id:
            raise ValueError("an SSE id must not contain NUL: decoders ignore it")
        parts.append(f"id: {id}\n")
    if retry is not None:
        if retry < 0:
            raise ValueError("retry must be a non-negative number of milliseconds")
        parts.append(f"retry: {retry}\n")
    if data is not None:
        parts.extend(f"data: {line}\n" for line in _LINE_END.split(data))
    parts.append("\n")
    return "".join(parts)


def encode_comment(text: str = "") -> str:
    """A comment line: ignored by clients, it keeps proxies and load balancers from closing an idle stream."""
    return "".join(f":{' ' if line else ''}{line}\n" for line in _LINE_END.split(text)) + "\n"


def _check_single_line(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} must be a single line")


class SSEDecoder:
    """Incremental decoder: feed it bytes as they arrive, split anywhere, and get whole events back.

    With ``comments=True`` comment lines are returned too (as :class:`Comment`), which is how a client sees
    heartbeats.
    """

    def __init__(self, *, comments: bool = False) -> None:
        self._comments = comments
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._utf8_clean = True  # the incremental decoder holds no bytes of an unfinished character
        self._started = False  # a BOM is only stripped at the very start of the stream
        self._skip_lf = False  # the last chunk ended in CR: an LF at the start of the next one belongs to it
        # Fragments of the unfinished line. Joining once per line instead of concatenating per chunk keeps a long
        # line that arrives a byte at a time linear rather than quadratic.
        self._pending: list[str] = []
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        self.retry: int | None = None
        """The latest reconnection time the server asked for, in milliseconds."""

    @property
    def last_event_id(self) -> str:
        return self._last_id

    def feed(self, chunk: bytes | str) -> list[ServerSentEvent | Comment]:
        out: list[ServerSentEvent | Comment] = []
        self._feed(chunk, out, False)
        return out

    def feed_data(self, chunk: bytes | str) -> list[tuple[str, str]]:
        """:meth:`feed` for readers that need only each event's type and data: ``(event, data)`` pairs, no
        comments, and no :class:`ServerSentEvent` per event (the per-token path of an upstream reader). Both
        methods share one state, so a stream may be read with either; ``last_event_id`` and ``retry`` are kept."""
        out: list[tuple[str, str]] = []
        self._feed(chunk, out, True)
        return out

    def _text(self, chunk: bytes) -> str:
        # A chunk of whole characters (nearly all of them) decodes in one step; the incremental decoder is only
        # needed for a character split across chunks or an invalid byte, and gives the same text for the rest.
        if self._utf8_clean:
            try:
                return chunk.decode()
            except UnicodeDecodeError:
                pass
        text = self._utf8.decode(chunk)
        self._utf8_clean = not self._utf8.getstate()[0]
        return text

    def _feed(self, chunk: bytes | str, out: list[Any], pairs: bool) -> None:
        text = self._text(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return
        # Almost every stream ends its lines with LF alone: str.split is then the same split, and much cheaper.
        parts = _LINE_END.split(text) if "\r" in text else text.split("\n")
        self._skip_lf = text[-1] == "\r"
        pending = self._pending
        if len(parts) == 1:
            pending.append(parts[0])
            return
        if pending:
            pending.append(parts[0])
            parts[0] = "".join(pending)
        self._pending = [parts[-1]] if parts[-1] else []
        data = self._data
        for line in parts[:-1]:
            # The lines of a token stream, inline: a "data: " field (what _line does with it), and the blank line.
            if line[:6] == "data: ":
                data.append(line[6:])
            elif line:
                self._line(line, out, pairs)
            else:
                self._dispatch(out, pairs)
                data = self._data

    def close(self) -> list[ServerSentEvent | Comment]:
        """End of stream. "Once the end of the file is reached, any pending data must be discarded.\""""
        tail = self._utf8.decode(b"", final=True)
        out = self.feed(tail) if tail else []
        self._pending = []
        self._data = []
        self._event = ""
        return out

    def _line(self, line: str, out: list[Any], pairs: bool) -> None:
        if not line:
            self._dispatch(out, pairs)
            return
        if line[0] == ":":
            if self._comments and not pairs:
                value = line[1:]
                out.append(Comment(value[1:] if value[:1] == " " else value))
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = self.retry = int(value)
        # Any other field name is ignored, as the spec says.

    def _dispatch(self, out: list[Any], pairs: bool) -> None:
        if not self._data:
            # "If the data buffer is an empty string, set the data buffer and the event type buffer to the empty
            # string and return." The id (and retry) stay set.
            self._event = ""
            return
        if pairs:
            out.append((self._event or "message", "\n".join(self._data)))
        else:
            out.append(
                ServerSentEvent(
                    data="\n".join(self._data),
                    event=self._event or "message",
                    id=self._last_id,
                    retry=self._retry,
                )
            )
        self._data = []
        self._event = ""
        self._retry = None


def iter_sse(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    decoder = SSEDecoder()
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, ServerSentEvent):
                yield item
    decoder.close()


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    decoder = SSEDecoder()
    async for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, ServerSentEvent):
                yield item
    decoder.close()
