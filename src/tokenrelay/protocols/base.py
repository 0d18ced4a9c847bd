"""Wire protocols: how a run's events look to a particular kind of client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from tokenrelay.stores.base import StoredEvent

__all__ = ["Encoder", "PrimedEncoder", "StreamContext", "WireProtocol"]


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


@runtime_checkable
class PrimedEncoder(Protocol):
    """An encoder whose frames depend on earlier events (AI SDK part ids, OpenAI tool call indexes).

    Before a resume after event ``n`` it is given events ``1..n`` to catch up with, and writes none of them (nor
    its opening frames): the client already has them.
    """

    def prime(self, earlier: Sequence[StoredEvent]) -> None: ...


class WireProtocol(Protocol):
    name: ClassVar[str]
    media_type: ClassVar[str]
    headers: ClassVar[dict[str, str]]

    def encoder(self, ctx: StreamContext) -> Encoder: ...
