from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
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

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count one stream around its body: finished, cancelled (closed or cancelled mid-way) or failed."""
        self.started += 1
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        except BaseException:
            self.failed += 1
            raise
        else:
            self.finished += 1
