"""The one interface every AI backend implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokenrelay.errors import BackendError
from tokenrelay.events import Event
from tokenrelay.messages import Message, Role

__all__ = ["Backend", "BackendError", "GenerateOptions", "Message", "NoSetup", "Role"]


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """Per-run overrides; ``None`` means the backend's configured default."""

    max_tokens: int | None = None
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An AI backend: a conversation in, an async iterator of events out.

    Contract:
    - ``stream`` yields events as the model produces them and may end with a ``FinishEvent`` (the run adds one
      with reason "stop" if it does not). It raises :class:`BackendError` for failures it can name; anything else
      becomes an ``internal_error``.
    - Closing the iterator (``aclose()``, or cancelling the task iterating it) must stop the upstream work: close
      the HTTP response, stop the sampler. The run relies on this for cancellation.
    - ``load`` fails fast, before a server starts: it raises :class:`BackendError` with a one-line reason if the
      backend cannot work (the local backend loads its model there; a remote one has checked its configuration
      when it was built). ``start`` runs once before the first stream (load a model, open a pool) and may raise
      ``BackendError`` to refuse to start; ``close`` releases it.
    """

    name: str

    def load(self) -> None:
        """Fail fast: raise :class:`BackendError` with a one-line reason if the backend cannot work."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]: ...

    def describe(self) -> dict[str, Any]:
        """Facts for ``/api/health`` (model name, queue length...)."""
        ...


class NoSetup:
    """The lifecycle of a backend with nothing to load, start or release: every step a no-op."""

    def load(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
