"""The SSE decoder as it was before its fast paths, kept as the oracle they must agree with on every input."""

from __future__ import annotations

import codecs
import re

from tokenrelay.sse import Comment, ServerSentEvent

_LINE_END = re.compile(r"\r\n|\r|\n")


class ReferenceDecoder:
    """Incremental decoder: feed it bytes as they arrive, split anywhere, and get whole events back.

    With ``comments=True`` comment lines are returned too (as :class:`Comment`), which is how a client sees
    heartbeats.
    """

    def __init__(self, *, comments: bool = False) -> None:
        self._comments = comments
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
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
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        parts = _LINE_END.split(text)
        self._skip_lf = text[-1] == "\r"
        out: list[ServerSentEvent | Comment] = []
        if len(parts) == 1:
            self._pending.append(parts[0])
            return out
        self._pending.append(parts[0])
        first = "".join(self._pending)
        self._pending = [parts[-1]] if parts[-1] else []
        self._line(first, out)
        for line in parts[1:-1]:
            self._line(line, out)
        return out

    def close(self) -> list[ServerSentEvent | Comment]:
        """End of stream. "Once the end of the file is reached, any pending data must be discarded.\""""
        tail = self._utf8.decode(b"", final=True)
        out = self.feed(tail) if tail else []
        self._pending = []
        self._data = []
        self._event = ""
        return out

    def _line(self, line: str, out: list[ServerSentEvent | Comment]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            if self._comments:
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

    def _dispatch(self, out: list[ServerSentEvent | Comment]) -> None:
        if not self._data:
            # "If the data buffer is an empty string, set the data buffer and the event type buffer to the empty
            # string and return." The id (and retry) stay set.
            self._event = ""
            return
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
