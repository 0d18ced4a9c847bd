"""The events a client sees, parsed from the seed protocol's ``{"delta"}`` / ``{"error"}`` / ``{"done"}`` frames."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tokenrelay.sse import ServerSentEvent

__all__ = ["ChatResult", "Delta", "Done", "Other", "StreamError", "StreamEvent", "parse"]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text."""

    text: str
    id: str


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error frame: the run failed mid-stream. The done frame follows."""

    code: str
    message: str
    retryable: bool
    id: str


@dataclass(frozen=True, slots=True)
class Done:
    """The done frame: the run is over, and why."""

    finish_reason: str
    run_id: str | None
    conversation_id: str | None
    usage: dict[str, Any] | None
    id: str


@dataclass(frozen=True, slots=True)
class Other:
    """A frame this client does not model (reasoning, tool calls, metadata): the decoded JSON."""

    data: dict[str, Any]
    id: str


StreamEvent = Delta | StreamError | Done | Other


@dataclass(slots=True)
class ChatResult:
    """A whole answer, as :meth:`AsyncClient.chat` / :meth:`Client.chat` collect it from the stream."""

    text: str
    finish_reason: str
    run_id: str | None
    conversation_id: str | None
    usage: dict[str, Any] | None = None
    errors: list[StreamError] = field(default_factory=list)

    def add(self, event: StreamEvent) -> None:
        """Take one more event of the stream into the result."""
        if isinstance(event, Delta):
            self.text += event.text
        elif isinstance(event, StreamError):
            self.errors.append(event)
        elif isinstance(event, Done):
            self.finish_reason = event.finish_reason
            self.run_id = event.run_id
            self.conversation_id = event.conversation_id
            self.usage = event.usage


def parse(sse: ServerSentEvent) -> StreamEvent:
    """One decoded SSE event as the client's event (raises ``ValueError`` if its data is not JSON)."""
    data = json.loads(sse.data)
    if not isinstance(data, dict):
        return Other({"value": data}, sse.id)
    if "delta" in data:
        return Delta(str(data["delta"]), sse.id)
    if data.get("done"):
        return Done(
            str(data.get("finish_reason", "stop")),
            data.get("run_id"),
            data.get("conversation_id"),
            data.get("usage"),
            sse.id,
        )
    if isinstance(data.get("error"), dict):
        err = data["error"]
        return StreamError(
            str(err.get("code", "error")), str(err.get("message", "")), bool(err.get("retryable")), sse.id
        )
    return Other(data, sse.id)
