"""A client's own tools and output controls (:class:`~tokenrelay.backends.base.ClientTools`, in Chat Completions
shapes) in each provider's request form.

- Chat Completions: as they are (:func:`chat_params`);
- Responses: flat ``function`` tools, a named choice as ``{"type": "function", "name"}``, the response format as
  ``text.format`` (:func:`responses_params`); it has no ``stop`` nor ``seed``;
- Anthropic Messages: tools with an ``input_schema``; ``tool_choice`` "auto", "required", "none" and a named tool
  as ``auto``, ``any``, ``none`` and ``tool``; ``parallel_tool_calls: false`` as ``disable_parallel_tool_use``;
  ``stop`` as ``stop_sequences`` (:func:`anthropic_params`); it has no response format nor seed;
- llama.cpp (llama-cpp-python's ``create_chat_completion``): ``stop``, ``seed``, and a response format as its
  ``json_object`` grammar, with the schema when there is one (:func:`llama_params`).
"""

from __future__ import annotations

from typing import Any

from tokenrelay.backends.base import ClientTools

__all__ = [
    "ANTHROPIC_SUPPORTS",
    "CHAT_SUPPORTS",
    "LLAMA_SUPPORTS",
    "RESPONSES_SUPPORTS",
    "anthropic_params",
    "chat_params",
    "llama_params",
    "responses_params",
]

CHAT_SUPPORTS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "stop", "seed"})
RESPONSES_SUPPORTS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format"})
ANTHROPIC_SUPPORTS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "stop"})
LLAMA_SUPPORTS = frozenset({"response_format", "stop", "seed"})

# An empty object schema, for a function declared without parameters (Anthropic and Responses want one).
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _named(choice: str | dict[str, Any] | None) -> str | None:
    """The tool a named ``tool_choice`` forces, or ``None``."""
    return str(choice["function"]["name"]) if isinstance(choice, dict) else None


def _common(tools: ClientTools) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if tools.parallel_tool_calls is not None:
        params["parallel_tool_calls"] = tools.parallel_tool_calls
    return params


def chat_params(tools: ClientTools | None) -> dict[str, Any]:
    """The request fields for Chat Completions: the client's, as they are."""
    if tools is None:
        return {}
    params = _common(tools)
    if tools.tools:
        params["tools"] = list(tools.tools)
    if tools.tool_choice is not None:
        params["tool_choice"] = tools.tool_choice
    if tools.response_format is not None:
        params["response_format"] = tools.response_format
    if tools.stop:
        params["stop"] = list(tools.stop)
    if tools.seed is not None:
        params["seed"] = tools.seed
    return params


def _responses_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    out: dict[str, Any] = {
        "type": "function",
        "name": function["name"],
        "parameters": function.get("parameters") or _NO_PARAMETERS,
        # Chat Completions' default; the Responses API's own default is strict.
        "strict": bool(function.get("strict") or False),
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _responses_format(response_format: dict[str, Any]) -> dict[str, Any]:
    if response_format["type"] != "json_schema":
        return {"type": response_format["type"]}
    schema = response_format["json_schema"]
    out: dict[str, Any] = {"type": "json_schema", "name": schema["name"], "schema": schema.get("schema") or {}}
    if schema.get("description"):
        out["description"] = schema["description"]
    if schema.get("strict") is not None:
        out["strict"] = schema["strict"]
    return out


def responses_params(tools: ClientTools | None) -> dict[str, Any]:
    """The request fields for the Responses API."""
    if tools is None:
        return {}
    params = _common(tools)
    if tools.tools:
        params["tools"] = [_responses_tool(t) for t in tools.tools]
    name = _named(tools.tool_choice)
    if name is not None:
        params["tool_choice"] = {"type": "function", "name": name}
    elif tools.tool_choice is not None:
        params["tool_choice"] = tools.tool_choice
    if tools.response_format is not None:
        params["text"] = {"format": _responses_format(tools.response_format)}
    return params


def _anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    out: dict[str, Any] = {"name": function["name"], "input_schema": function.get("parameters") or _NO_PARAMETERS}
    if function.get("description"):
        out["description"] = function["description"]
    return out


_ANTHROPIC_CHOICE = {"auto": "auto", "required": "any", "none": "none"}


def _anthropic_choice(tools: ClientTools) -> dict[str, Any] | None:
    name = _named(tools.tool_choice)
    if name is not None:
        choice: dict[str, Any] = {"type": "tool", "name": name}
    elif isinstance(tools.tool_choice, str):
        choice = {"type": _ANTHROPIC_CHOICE[tools.tool_choice]}
    elif tools.parallel_tool_calls is False:
        choice = {"type": "auto"}
    else:
        return None
    if tools.parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def anthropic_params(tools: ClientTools | None) -> dict[str, Any]:
    """The request fields for Anthropic's Messages API."""
    if tools is None:
        return {}
    params: dict[str, Any] = {}
    if tools.tools:
        params["tools"] = [_anthropic_tool(t) for t in tools.tools]
        choice = _anthropic_choice(tools)
        if choice is not None:
            params["tool_choice"] = choice
    if tools.stop:
        params["stop_sequences"] = list(tools.stop)
    return params


def llama_params(tools: ClientTools | None) -> dict[str, Any]:
    """The keyword arguments for llama-cpp-python's ``create_chat_completion``."""
    if tools is None:
        return {}
    params: dict[str, Any] = {}
    if tools.stop:
        params["stop"] = list(tools.stop)
    if tools.seed is not None:
        params["seed"] = tools.seed
    response_format = tools.response_format
    if response_format is not None and response_format["type"] != "text":
        # Its grammar-constrained JSON: any object, or the one the schema describes.
        llama_format: dict[str, Any] = {"type": "json_object"}
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            llama_format["schema"] = schema
        params["response_format"] = llama_format
    return params
