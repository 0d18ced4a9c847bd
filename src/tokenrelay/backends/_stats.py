from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class StreamStats:
    """How streams ended, as the backend itself saw it: the way tests and operators see cancellation land."""

    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {f"streams_{k}": v for k, v in asdict(self).items()}

    def track(self) -> _Tracked:
        """Count one stream around its body: finished, cancelled (closed or cancelled mid-way) or failed."""
        return _Tracked(self)


class _Tracked:
    """:meth:`StreamStats.track`'s context manager: a class rather than a ``@contextmanager``, because it is held for
    a stream's whole length, and a generator-based one keeps a generator, its frame and its wrapper alive as long."""

    __slots__ = ("stats",)

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats

    def __enter__(self) -> None:
        self.stats.started += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.stats.finished += 1
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self.stats.cancelled += 1
        else:
            self.stats.failed += 1
