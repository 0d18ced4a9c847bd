"""Wire protocols: how a run's events look to a particular kind of client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from tokenrelay.stores.base import StoredEvent

__all__ = ["Encoder", "StreamContext", "WireProtocol"]


@dataclass(frozen=True, slots=True)
class StreamContext:
    run_id: str
    conversation_id: str
    user_id: str


class Encoder(Protocol):
    """Turns one connection's events into bytes. Stateful (one per connection), pure (no I/O)."""

    def open(self) -> bytes:
        """Bytes to send before the first event (may be empty)."""
        ...

    def encode(self, batch: Sequence[StoredEvent]) -> bytes:
        """All of a batch's frames, to go out in one write."""
        ...

    def heartbeat(self) -> bytes: ...


class WireProtocol(Protocol):
    name: ClassVar[str]
    media_type: ClassVar[str]
    headers: ClassVar[dict[str, str]]

    def encoder(self, ctx: StreamContext) -> Encoder: ...
