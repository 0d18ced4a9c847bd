"""A conversation's messages as backends receive them: the vocabulary shared by history, runs and backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Message", "Role"]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation: who said it, and what."""

    role: Role
    content: str
