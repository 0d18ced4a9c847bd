"""Client-side tools on ``/v1/chat/completions``: the request's ``tools``, ``tool_choice``, ``parallel_tool_calls``,
``response_format``, ``stop``, ``seed`` and ``logprobs``, validated, and the conversation's tool turns.

The fields go to the backend as a :class:`~tokenrelay.backends.base.ClientTools`; one the backend cannot honour (it
is not in its ``supports``) is refused with a 400 naming it, never dropped. An assistant message's ``tool_calls``
and the ``tool`` messages after it (each answering one of those calls by its ``tool_call_id``) become one answer
with its call and result parts, which each backend hands to its model in its own wire form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenrelay.backends.base import ClientTools, client_support
from tokenrelay.messages import Message, Part, Role, TextPart, ToolCallPart, ToolResultPart
from tokenrelay.server.pipeline import Refusal

__all__ = [
    "FunctionTool",
    "ToolCallIn",
    "check_support",
    "client_tools",
    "conversation",
]

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
_CHOICES = ("auto", "none", "required")


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDef


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    arguments: str


class ToolCallIn(BaseModel):
    """A call in an assistant message: what the model asked for on an earlier turn."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: CalledFunction


class TextIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextIn] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(None, min_length=1, max_length=256)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or ())


class ToolFields(BaseModel):
    """The request's tool and output fields (mixed into the Chat Completions request)."""

    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    stop: Any = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


def _bad(param: str, message: str) -> Refusal:
    return Refusal(400, "invalid_value", f"{param}: {message}", field=param)


def _tool_choice(value: Any, names: set[str]) -> str | dict[str, Any] | None:
    if value is None:
        return None
    if not names:
        raise _bad("tool_choice", "is only allowed when tools are given")
    if isinstance(value, str):
        if value not in _CHOICES:
            raise _bad("tool_choice", f"must be one of {', '.join(_CHOICES)}, or a named function")
        return value
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise _bad("tool_choice", 'a named choice is {"type": "function", "function": {"name": ...}}')
    if name not in names:
        raise _bad("tool_choice", f"names the function {name!r}, which is not among the tools")
    return {"type": "function", "function": {"name": name}}


def _json_schema(value: Any) -> dict[str, Any]:
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad("response_format.json_schema", "must be an object with a name and a schema")
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise _bad("response_format.json_schema.name", "must be 1 to 64 letters, digits, _ or -")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise _bad("response_format.json_schema.schema", "must be a JSON Schema object")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _bad("response_format.json_schema.strict", "must be a boolean")
    out: dict[str, Any] = {"name": name}
    for key in ("description", "schema", "strict"):
        if spec.get(key) is not None:
            out[key] = spec[key]
    return {"type": "json_schema", "json_schema": out}


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        return _json_schema(value)
    raise _bad("response_format", 'must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", ...}')


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stop = [value] if isinstance(value, str) else value
    if not isinstance(stop, list) or not 1 <= len(stop) <= 4 or not all(isinstance(s, str) and s for s in stop):
        raise _bad("stop", "must be a text, or a list of 1 to 4 texts, none of them empty")
    return tuple(stop)


def client_tools(fields: ToolFields) -> ClientTools | None:
    """The request's tool and output fields, checked; ``None`` when it has none."""
    tools = tuple(t.model_dump(exclude_none=True) for t in fields.tools or ())
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise _bad("tools", "two tools have the same name")
    if fields.parallel_tool_calls is not None and not tools:
        raise _bad("parallel_tool_calls", "is only allowed when tools are given")
    stop = _stop(fields.stop)
    out = ClientTools(
        tools=tools,
        tool_choice=_tool_choice(fields.tool_choice, set(names)),
        parallel_tool_calls=fields.parallel_tool_calls,
        response_format=_response_format(fields.response_format),
        stop=stop,
        seed=fields.seed,
    )
    return out if out.asked() else None


def check_support(backend: object, name: str, fields: ToolFields, tools: ClientTools | None) -> None:
    """Refuse (400 naming the field) what the backend cannot pass to its model."""
    supports = client_support(backend)
    asked = tools.asked() if tools is not None else []
    if fields.logprobs or fields.top_logprobs is not None:
        asked.append("logprobs" if fields.logprobs else "top_logprobs")
    for param in asked:
        if param not in supports and not (param == "top_logprobs" and "logprobs" in supports):
            message = f"{param}: the {name} backend does not support it"
            raise Refusal(400, "unsupported_parameter", message, field=param)


def _calls(i: int, message: ChatMessage) -> tuple[Part, ...]:
    text = message.text()
    parts: list[Part] = [TextPart(text)] if text else []
    seen: set[str] = set()
    for j, call in enumerate(message.tool_calls or ()):
        if call.id in seen:
            raise _bad(f"messages.{i}.tool_calls.{j}.id", f"the call id {call.id!r} is used twice")
        seen.add(call.id)
        parts.append(ToolCallPart(call.id, call.function.name, call.function.arguments))
    return tuple(parts)


def conversation(messages: Sequence[ChatMessage]) -> list[Message]:
    """The request's messages as the backend's conversation: ``developer`` as ``system``, and an assistant message
    with ``tool_calls`` with the ``tool`` messages after it as one answer of calls and results."""
    out: list[Message] = []
    answering: dict[str, int] = {}  # the open calls' ids -> the index in ``out`` of the message that made them
    for i, m in enumerate(messages):
        if m.role == "tool":
            at = _answered(i, m, answering)
            out[at] = _with_result(i, out[at], m)
            continue
        answering = {}
        if m.role == "assistant" and m.tool_calls:
            answering = {call.id: len(out) for call in m.tool_calls}
            out.append(Message("assistant", m.text(), _calls(i, m)))
            continue
        role: Role = "system" if m.role == "developer" else m.role
        out.append(Message(role, m.text()))
    return out


def _answered(i: int, message: ChatMessage, answering: dict[str, int]) -> int:
    if message.tool_call_id is None:
        raise _bad(f"messages.{i}.tool_call_id", "a tool message needs the id of the call it answers")
    at = answering.get(message.tool_call_id)
    if at is None:
        raise _bad(
            f"messages.{i}.tool_call_id",
            f"{message.tool_call_id!r} answers no call of the assistant message before it",
        )
    return at


def _with_result(i: int, answer: Message, message: ChatMessage) -> Message:
    call_id = str(message.tool_call_id)
    if any(isinstance(p, ToolResultPart) and p.call_id == call_id for p in answer.parts):
        raise _bad(f"messages.{i}.tool_call_id", f"the call {call_id!r} is answered twice")
    return Message(answer.role, answer.content, (*answer.parts, ToolResultPart(call_id, message.text())))
