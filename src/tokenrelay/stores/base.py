"""Run stores: where a run's events live, so that any connection can read them from any cursor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tokenrelay.events import Event

__all__ = ["RunInfo", "RunStatus", "RunStore", "StoredEvent"]

RunStatus = Literal["running", "finished"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with its sequence id: 1, 2, 3... within its run. The id is the SSE ``id:`` and the resume cursor."""

    seq: int
    event: Event


@dataclass(slots=True)
class RunInfo:
    run_id: str
    user_id: str
    conversation_id: str
    backend: str
    created_at: float
    status: RunStatus = "running"
    last_seq: int = 0
    finished_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


class RunStore(Protocol):
    """Append-only event logs, one per run.

    Sequence ids are assigned by the store, start at 1 and have no gaps. ``read`` returns the events after a cursor
    and, when there are none yet, waits for more up to ``timeout`` seconds (``[]`` when it passes, or at once when
    the run is finished). Finished runs expire after the store's TTL.
    """

    async def create(self, info: RunInfo) -> None: ...

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        """Append and return the sequence id of the last appended event."""
        ...

    async def finish(self, run_id: str) -> None: ...

    async def get(self, run_id: str) -> RunInfo | None: ...

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]: ...

    async def close(self) -> None: ...
