"""The agent's model settings: the backend's defaults, a run's overrides, mapped to the SDK's ``ModelSettings``.

``tool_choice`` is ``auto``, ``required``, ``none`` or a tool's name (the model must call that tool; after a tool
call the SDK resets it, so the model can then answer). Some servers need it: llama.cpp's server (its
``chatml-function-calling`` format) shows the tools to the model while streaming only when ``tool_choice`` names
one. ``extra`` is any other ``ModelSettings`` field by name (``top_p``, ``extra_body`` ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tokenrelay.backends.base import BackendError, GenerateOptions

if TYPE_CHECKING:
    from agents import ModelSettings

__all__ = ["AgentOptions", "model_settings"]


@dataclass(frozen=True, slots=True)
class AgentOptions:
    max_tokens: int | None = None
    temperature: float | None = None
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    extra: Mapping[str, Any] | None = None


def model_settings(defaults: AgentOptions, options: GenerateOptions) -> ModelSettings:
    """The settings of one run; a setting the SDK refuses is a ``bad_config`` error."""
    from agents import ModelSettings

    if defaults.tool_choice is not None and not defaults.tool_choice.strip():
        raise BackendError("bad_config", "--agent-tool-choice takes auto, required, none or a tool name, not ''")
    given: dict[str, Any] = dict(defaults.extra or {})
    chosen = {
        "temperature": defaults.temperature if options.temperature is None else options.temperature,
        "max_tokens": options.max_tokens or defaults.max_tokens,
        "tool_choice": defaults.tool_choice,
        "parallel_tool_calls": defaults.parallel_tool_calls,
    }
    given.update({k: v for k, v in chosen.items() if v is not None})
    known = {f.name for f in dataclasses.fields(ModelSettings)}
    unknown = sorted(given.keys() - known)
    if unknown:  # the SDK would drop them without a word
        raise BackendError("bad_config", f"--agent-model-settings: no such model setting: {', '.join(unknown)}")
    try:
        return ModelSettings(**given)
    except (TypeError, ValueError) as exc:
        raise BackendError("bad_config", f"--agent-model-settings: {exc}") from None
