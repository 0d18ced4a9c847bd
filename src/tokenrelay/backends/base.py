"""The one interface every AI backend implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokenrelay.errors import BackendError
from tokenrelay.events import Event
from tokenrelay.messages import Message, Role

__all__ = [
    "CLIENT_FIELDS",
    "ApprovalDecision",
    "Backend",
    "BackendError",
    "ClientTools",
    "GenerateOptions",
    "Message",
    "NoSetup",
    "Resumable",
    "Role",
    "Suspend",
    "client_support",
]


CLIENT_FIELDS: frozenset[str] = frozenset(
    {"tools", "tool_choice", "parallel_tool_calls", "response_format", "stop", "seed", "logprobs"}
)
"""The request fields of :class:`ClientTools`: a backend names in its ``supports`` the ones it passes to its model."""


@dataclass(frozen=True, slots=True)
class ClientTools:
    """A client's own tools and output controls, in OpenAI's Chat Completions shapes, validated; empty or ``None``
    when not asked for. The model's calls of these tools come back as calls for the client to run.

    ``tools`` are ``{"type": "function", "function": {"name", "description", "parameters", "strict"}}``;
    ``tool_choice`` is "auto", "none", "required" or ``{"type": "function", "function": {"name": ...}}``;
    ``response_format`` is ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``.
    """

    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def asked(self) -> list[str]:
        """The fields set, by their request names (a ``response_format`` of type "text", the default, is none)."""
        given = {
            "tools": bool(self.tools),
            "tool_choice": self.tool_choice is not None,
            "parallel_tool_calls": self.parallel_tool_calls is not None,
            "response_format": self.response_format is not None and self.response_format.get("type") != "text",
            "stop": bool(self.stop),
            "seed": self.seed is not None,
        }
        return [name for name, set_ in given.items() if set_]


def client_support(backend: object) -> frozenset[str]:
    """The :data:`CLIENT_FIELDS` a backend passes to its model (its ``supports``; none if it declares nothing)."""
    supports: object = getattr(backend, "supports", frozenset())
    return frozenset(supports) if isinstance(supports, frozenset | set) else frozenset()


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """Per-run overrides; ``None`` means the backend's configured default."""

    max_tokens: int | None = None
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    client_tools: ClientTools | None = None


@dataclass(frozen=True, slots=True)
class Suspend:
    """Yielded by a backend after its ``ToolApprovalRequest`` events, as its last item: stop here; ``state``
    (opaque text, e.g. the Agents SDK's ``RunState`` as JSON) is what :meth:`Resumable.resume` goes on from.

    Not an event: never stored in a run's log nor sent to a client.
    """

    state: str


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """A person's answer to the approval request of ``call_id``."""

    call_id: str
    approved: bool
    reason: str | None = None


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

    def stream(
        self, messages: Sequence[Message], options: GenerateOptions
    ) -> AsyncGenerator[Event | Suspend, None]: ...

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


@runtime_checkable
class Resumable(Protocol):
    """A backend that can go on with a generation it suspended (:class:`Suspend`).

    ``resume`` runs each approved call (exactly once) and gives each denied one to the model as the tool's result
    (e.g. "The user denied this tool call." and the reason), yielded as ``ToolCallResult(call_id, output=<that
    text>, is_error=True)``; it may yield further approval requests and another ``Suspend``.
    """

    def resume(self, state: str, decisions: Sequence[ApprovalDecision]) -> AsyncGenerator[Event | Suspend, None]: ...
