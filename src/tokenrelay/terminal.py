"""How ``tokenrelay chat`` shows a run in a terminal, and what its exit status says.

The answer is written as it streams. Around it, dimmed when the output is a terminal (plain text with the same
brackets when it is a file or a pipe, and with ``NO_COLOR`` set): the model's reasoning, each tool call with its
arguments and then its result, the place in the queue, and how the answer ended when it was not the normal end
(cut at the length limit, cancelled, withheld, not saved). A failure (an error frame, a stream that could not be
completed, a refused request) goes to stderr, and makes the exit status 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TextIO

from tokenrelay.client import (
    ApprovalRequest,
    ApprovalResponse,
    Delta,
    Done,
    Metadata,
    Other,
    Paused,
    Reasoning,
    StreamError,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    ToolResult,
)

__all__ = ["FAILED", "OK", "STOPPED", "TurnView", "wants_color"]

OK = 0
FAILED = 1
STOPPED = 130  # the shells' status for a command ended by Ctrl-C (128 + SIGINT)

_DIM = "\x1b[2m"
_RESET = "\x1b[0m"
_SHOWN_CHARS = 300  # a tool's arguments or output longer than this is shown cut, on one line

# How an answer ended, when that is worth saying; a failure also makes the exit status FAILED.
_ENDINGS: dict[str, tuple[str, bool]] = {
    "length": ("[cut at the length limit]", False),
    "cancelled": ("[cancelled]", True),
    "content_filter": ("[withheld by the content filter]", True),
    "error": ("", True),  # the error frame before it has said what happened
}


def wants_color(out: TextIO) -> bool:
    """ANSI styles only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org)."""
    return out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN_CHARS else flat[: _SHOWN_CHARS - 3] + "..."


def _arguments(raw: str) -> str:
    try:
        return _one_line(json.dumps(json.loads(raw), ensure_ascii=False))
    except ValueError:
        return _one_line(raw)  # not (yet) JSON: shown as it came


@dataclass
class _Call:
    name: str
    arguments: list[str] = field(default_factory=list)
    shown: bool = False


class TurnView:
    """One answer on ``out`` (and failures on ``err``): feed it every event, then read :attr:`status`."""

    def __init__(self, out: TextIO, err: TextIO, *, color: bool) -> None:
        self.out = out
        self.err = err
        self.color = color
        self.status = OK
        self.conversation_id: str | None = None
        self._section = ""  # what the current line holds: "", "text" or "reasoning"
        self._calls: dict[str, _Call] = {}

    def show(self, event: StreamEvent) -> None:
        """Write one event of the stream."""
        if not isinstance(event, ToolCall | ToolCallDelta):
            self._show_calls()
        match event:
            case Delta():
                self._write("text", event.text)
            case Reasoning():
                self._write("reasoning", event.text)
            case ToolCall():
                self._calls[event.call_id] = _Call(event.name)
            case ToolCallDelta():
                self._calls.setdefault(event.call_id, _Call("?")).arguments.append(event.arguments)
            case ToolResult():
                self._tool_result(event)
            case Metadata():
                self._metadata(event)
            case StreamError():
                retry = " (retryable)" if event.retryable else ""
                self.failed(f"the run failed: {event.code}: {event.message}{retry}")
            case Done():
                self._done(event)
            case ApprovalRequest() | ApprovalResponse():
                self._approval(event)
            case Paused() | Other():
                pass  # a pause is answered by the caller; a frame of a newer server: nothing to show
        self.out.flush()

    def _approval(self, event: ApprovalRequest | ApprovalResponse) -> None:
        if isinstance(event, ApprovalRequest):
            self.note(f"[{event.name}({event.arguments}) waits for approval]")
        else:
            self.note(f"[{'approved' if event.approved else 'denied'}]")

    def note(self, text: str) -> None:
        """A line of its own about the answer (dimmed on a terminal)."""
        self._end_line()
        self.out.write(self._dim(text) + "\n")
        self.out.flush()

    def failed(self, message: str) -> None:
        """Say on stderr that the run failed, and make the exit status say so."""
        self._end_line()
        self.out.flush()
        self.err.write(f"tokenrelay: {message}\n")
        self.err.flush()
        self.status = FAILED

    def end(self) -> None:
        """The stream is over, however it ended: finish the last line."""
        self._show_calls()
        self._end_line()
        self.out.flush()

    def _dim(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.color else text

    def _write(self, section: str, text: str) -> None:
        if section != self._section:
            self._end_line()
            self._section = section
            if section == "reasoning":
                self.out.write(self._dim("[thinking] "))
        self.out.write(self._dim(text) if section == "reasoning" else text)

    def _end_line(self) -> None:
        if self._section:
            self.out.write("\n")
            self._section = ""

    def _show_calls(self) -> None:
        for call in self._calls.values():
            if not call.shown:
                call.shown = True
                self.note(f"[tool {call.name} {_arguments(''.join(call.arguments))}]")

    def _tool_result(self, event: ToolResult) -> None:
        name = self._calls[event.call_id].name if event.call_id in self._calls else "?"
        verb = "failed:" if event.is_error else "->"
        self.note(f"[tool {name} {verb} {_one_line(event.output)}]")

    def _metadata(self, event: Metadata) -> None:
        position = event.queue_position
        if position:
            self.note(f"[queued: {position} ahead]")
        for key, value in event.data.items():
            if key != "queue_position":
                self.note(f"[{key}: {_one_line(json.dumps(value, ensure_ascii=False))}]")

    def _done(self, event: Done) -> None:
        self.conversation_id = event.conversation_id or self.conversation_id
        text, failure = _ENDINGS.get(event.finish_reason, ("", False))
        if text:
            self.note(text)
        if failure:
            self.status = FAILED
        if event.saved is False:
            self.note("[not saved: a follow-up will not see this answer]")
