"""Run stores: where a run's events live, so that any connection can read them from any cursor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tokenrelay.errors import RunClosedError
from tokenrelay.events import Event, StoredEvent, ToolApprovalRequest, ToolApprovalResponse
from tokenrelay.stores.chat_runs import ChatRunIndex

__all__ = [
    "ChatRunIndex",
    "DecisionResult",
    "DecisionStatus",
    "RunClosedError",
    "RunInfo",
    "RunStatus",
    "RunStore",
    "StoreListener",
    "StoredEvent",
    "Suspension",
]

RunStatus = Literal["running", "waiting", "finished"]
"""``waiting``: paused for approvals; no instance drives it (see :class:`Suspension`)."""


@dataclass(frozen=True, slots=True)
class Suspension:
    """What a run paused for approvals goes on from: the backend's opaque ``state``, the ``backend`` that wrote it,
    the calls waiting for an answer and when the run expires (unix seconds) if they are not all answered."""

    state: str
    backend: str
    expires_at: float
    calls: tuple[ToolApprovalRequest, ...]


DecisionStatus = Literal["recorded", "resume", "same", "conflict", "unknown", "expired"]
"""What became of an answer to an approval request:

- ``recorded``: recorded (its ``ToolApprovalResponse`` appended); other calls still wait;
- ``resume``: recorded, it was the last one, and this instance won the run: status ``running``, owned here; the
  caller drives it on from :attr:`DecisionResult.suspension` with :attr:`DecisionResult.decisions`;
- ``same``: the call was answered so already (nothing done: the same answer twice is one);
- ``conflict``: the call was answered otherwise already;
- ``unknown``: the run has no such call waiting;
- ``expired``: the run's approvals expired (it is ended, or being ended, with ``approval_expired``).
"""


@dataclass(frozen=True, slots=True)
class DecisionResult:
    status: DecisionStatus
    suspension: Suspension | None = None  # with ``resume``
    decisions: tuple[ToolApprovalResponse, ...] = ()  # with ``resume``: every call's answer, in the calls' order


@dataclass(slots=True)
class RunInfo:
    """A run's facts, kept by the store beside its log. ``extra`` holds per-run flags given at start."""

    run_id: str
    user_id: str
    conversation_id: str
    backend: str
    created_at: float
    status: RunStatus = "running"
    last_seq: int = 0
    finished_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


class StoreListener(Protocol):
    """What a store tells the run manager of its own instance. Called on the event loop; must not block."""

    def cancel_requested(self, run_id: str) -> None:
        """Someone (on any instance) asked to stop a run this instance drives."""
        ...

    def viewers_gone(self, run_id: str) -> None:
        """The last viewer of a run this instance drives left, on another instance."""
        ...

    def run_lost(self, run_id: str) -> None:
        """Another instance ended a run this one drives (it took this one for dead): stop it, record nothing."""
        ...

    async def run_interrupted(self, info: RunInfo, events: Sequence[StoredEvent]) -> None:
        """This instance found a run's owner dead and ended the run (``events`` is the whole log, ending included);
        also when it ended a waiting run whose approvals expired.

        Awaited before this instance's readers see the ending, so history is written before "done", as by an owner.
        """
        ...


class RunStore(Protocol):
    """Append-only event logs, one per run, and what instances sharing them need to coordinate.

    Sequence ids are assigned by the store, start at 1 and have no gaps. ``read`` returns the events after a cursor
    and, when there are none yet, waits for more up to ``timeout`` seconds (``[]`` when it passes, or at once when
    the run is finished). Finished runs expire after the store's TTL.

    The instance that created a run *owns* it: only it appends. Viewer counts and cancel requests are global, so a
    viewer or a cancel on another instance reaches the owner through the store (``StoreListener``). A store for a
    single instance implements those trivially.
    """

    shared: bool
    """Whether other instances share the store: a run may then be followed, and ended, by an instance other than the
    one that drives it (which then saves its answer, so the question must be stored before any of it is seen)."""

    async def check(self) -> None:
        """Return when the store answers; raise :class:`~tokenrelay.errors.StoreUnavailable` when it does not."""
        ...

    async def start(self) -> None:
        """Connect and start background work; called once before use."""
        ...

    def attach(self, listener: StoreListener) -> None:
        """Tell ``listener`` (this instance's run manager) what other instances ask of its runs."""
        ...

    def chat_run_index(self) -> ChatRunIndex:
        """Where useChat's chat id → latest run id lives: shared by every instance that shares this store."""
        ...

    async def create(self, info: RunInfo) -> None:
        """Start a run's log. Run ids are random, so a store need not check; one that does raises
        ``RunExistsError`` for an id it has."""
        ...

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        """Append and return the sequence id of the last appended event.

        ``RunClosedError`` if the run was ended elsewhere; a store that can tell raises ``RunNotFound`` for an
        unknown run and ``RunFinishedError`` for a finished one.
        """
        ...

    async def finish(self, run_id: str) -> None:
        """Mark the run finished (its finish event is appended before); wakes its readers. Idempotent."""
        ...

    async def get(self, run_id: str) -> RunInfo | None:
        """The run's info, or ``None`` for an unknown or expired run."""
        ...

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        """The events after ``after``, waiting up to ``timeout`` seconds for some (``None``: no limit, ``0``: none)
        while the run is running; ``[]`` for an unknown run."""
        ...

    async def read_coalesced(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        """``read``, with consecutive text deltas joined into one that keeps the last one's id
        (:func:`tokenrelay.coalescing.coalesce`)."""
        ...

    async def add_viewer(self, run_id: str) -> int:
        """Count one more viewer of the run, on any instance; returns the new count."""
        ...

    async def remove_viewer(self, run_id: str) -> int:
        """Count one viewer less and return how many remain. At 0 the owner is told, wherever it is."""
        ...

    async def viewers(self, run_id: str) -> int:
        """How many viewers the run has, on every instance."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask the instance that drives a running run to stop it; ``False`` when no other instance does."""
        ...

    # Approvals: a run paused for a person's answer is kept by the store alone (status ``waiting``, no owner).

    async def suspend(self, run_id: str, suspension: Suspension) -> int:
        """Pause a running run driven here: append ``RunPaused(suspension.expires_at)`` after its events, keep the
        suspension, mark it ``waiting`` with no owner (no liveness judges it; it is kept until it expires, plus the
        finished-run TTL). Returns the pause's sequence id."""
        ...

    async def record_decision(self, run_id: str, decision: ToolApprovalResponse) -> DecisionResult:
        """Record one answer, atomically (see :data:`DecisionStatus`): of concurrent last answers, on any instances,
        exactly one gets ``resume``. A run past its expiry is ended first (``expired``)."""
        ...

    async def suspension(self, run_id: str) -> Suspension | None:
        """A waiting run's suspension (``None`` if it is not waiting)."""
        ...

    async def cancel_waiting(self, run_id: str) -> bool:
        """End a waiting run at once (a person's Stop): ``FinishEvent("cancelled")`` after its log, no pending call
        ever runs, and the history is told as for an expiry. ``False`` when the run is not waiting."""
        ...

    async def restore_waiting(self, info: RunInfo, events: Sequence[Event], suspension: Suspension) -> bool:
        """Keep again a waiting run this store lost (an in-memory store restarted), rebuilt from the history: its
        log is ``events`` (its pause last), it waits for ``suspension``'s calls. ``False`` when the store has the
        run, or keeps its runs itself (Redis)."""
        ...

    async def close(self) -> None:
        """Stop background work and wake every waiting reader."""
        ...
