"""What the history tests share."""

from __future__ import annotations

import time

from tokenrelay.history.base import StoredMessage


def msg(role: str, content: str, **kw: object) -> StoredMessage:
    return StoredMessage(role, content, created_at=kw.pop("at", time.time()), **kw)  # type: ignore[arg-type]
