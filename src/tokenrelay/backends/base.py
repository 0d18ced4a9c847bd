"""The one interface every AI backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tokenrelay.events import Event

__all__ = ["Backend", "BackendError", "GenerateOptions", "Message", "Role"]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """Per-run overrides; ``None`` means the backend's configured default."""

    max_tokens: int | None = None
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BackendError(Exception):
    """A failure the backend can name. The run turns it into an :class:`~tokenrelay.events.ErrorEvent`."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


@runtime_checkable
class Backend(Protocol):
    """An AI backend: a conversation in, an async iterator of events out.

    Contract:
    - ``stream`` yields events as the model produces them and may end with a ``FinishEvent`` (the run adds one
      with reason "stop" if it does not). It raises :class:`BackendError` for failures it can name; anything else
      becomes an ``internal_error``.
    - Closing the iterator (``aclose()``, or cancelling the task iterating it) must stop the upstream work: close
      the HTTP response, stop the sampler. The run relies on this for cancellation.
    - ``start`` runs once before the first stream (load a model, open a pool) and may raise ``BackendError`` to
      refuse to start; ``close`` releases it.
    """

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Event]: ...

    def describe(self) -> dict[str, Any]:
        """Facts for ``/api/health`` (model name, queue length...)."""
        ...
