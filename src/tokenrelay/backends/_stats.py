from __future__ import annotations

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
