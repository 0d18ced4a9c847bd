"""Wire protocols: how a run's events look to a particular kind of client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from tokenrelay.events import StoredEvent

__all__ = ["Encoder", "StreamContext", "WireProtocol", "ends_at_pause"]


@dataclass(frozen=True, slots=True)
class StreamContext:
    run_id: str
    conversation_id: str
    user_id: str


class Encoder(Protocol):
    """Turns one connection's events into bytes. Stateful (one per connection), pure (no I/O).

    ``sse_retry`` says whether the stream's first write may carry an SSE ``retry:`` hint (clients that are not
    EventSource-like, such as OpenAI's, reject fields they do not know). An encoder may also say
    ``ends_at_pause = True`` (a class attribute; :func:`ends_at_pause` reads it, ``False`` when absent): its response
    ends at a ``RunPaused`` (turn-based clients: AI SDK, OpenAI) instead of staying open until the run goes on.
    """

    sse_retry: ClassVar[bool]

    def open(self) -> bytes:
        """Bytes to send before the first event (may be empty)."""
        ...

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        """All of a batch's frames, to go out in one write."""
        ...

    def heartbeat(self) -> bytes: ...

    def prime(self, earlier: Sequence[StoredEvent]) -> None:
        """Catch up with events ``1..n`` before a resume after event ``n``, writing none of them (nor the opening
        frames): the client already has them. Encoders whose frames depend on earlier events (AI SDK part ids,
        OpenAI tool call indexes, the seed's usage) keep what they need."""
        ...


def ends_at_pause(encoder: Encoder) -> bool:
    """Whether ``encoder``'s response ends when the run pauses for an approval (see :class:`Encoder`)."""
    return bool(getattr(encoder, "ends_at_pause", False))


class WireProtocol(Protocol):
    name: ClassVar[str]
    media_type: ClassVar[str]
    headers: ClassVar[dict[str, str]]

    def encoder(self, ctx: StreamContext) -> Encoder: ...
