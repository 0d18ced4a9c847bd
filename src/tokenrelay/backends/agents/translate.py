"""Agents SDK stream events in, tokenrelay events out.

Tool calls stream as the model writes them: the model's own ``response.output_item.added`` (a function call)
becomes :class:`ToolCallStart` and each ``response.function_call_arguments.delta`` a :class:`ToolCallArgsDelta`,
so a viewer sees the call forming; the SDK's ``tool_called`` item for a call already started says nothing more
(it only speaks for calls that were not streamed, e.g. a hosted tool's). The deltas name their call by its place in
the response (``output_index``): the Chat Completions model gives every delta the same placeholder item id, so the
call id is looked up by that place, and stays the one the tool's output carries.

A tool's output becomes :class:`ToolCallResult` with its text. An MCP tool answers with content items; their text
is what the result carries (items joined by newlines, an image as ``[image]``). Structured content (an MCP tool's
``structuredContent``) is kept: as the result itself, as JSON, when the tool gave no text; else in a
:class:`MetadataEvent` ``{"tool_call_id": id, "structured_content": {...}}`` after the result, unless it only wraps
the text (FastMCP wraps a plain return value as ``{"result": text}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tokenrelay.backends._openai import incomplete_reason, response_text
from tokenrelay.events import (
    Event,
    FinishReason,
    MetadataEvent,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
)

if TYPE_CHECKING:
    from agents.items import TResponseStreamEvent
    from agents.stream_events import StreamEvent

__all__ = ["STRUCTURED", "AgentTranslator", "call_id_of", "tool_output_text"]

STRUCTURED = "structured_content"
"""The key of an MCP tool's structured content in a tool output's SDK-only ``custom_data``."""


class AgentTranslator:
    """One run's (or one resumed run's) translator. Pure: no I/O.

    ``handoffs`` are the tool names the model calls to hand off (not tools: a handoff shows as a metadata event);
    ``started`` the call ids whose start was already sent (the calls a resumed run was waiting on); ``denied`` the
    calls whose output is a person's refusal (an error result).
    """

    def __init__(
        self,
        starting_agent: str,
        *,
        handoffs: Iterable[str] = (),
        started: Iterable[str] = (),
        denied: Iterable[str] = (),
    ) -> None:
        self.agent = starting_agent
        self.reason: FinishReason = "stop"
        self.handoffs = set(handoffs)
        self.started = set(started)
        self.denied = set(denied)
        self._calls: dict[int, str] = {}  # the current response's function calls, by output index
        self.cut: tuple[int, int] | None = None
        """The tokens of a response that stopped short (``response.incomplete``), which the SDK ends with an
        error: the answer so far stands, and the run finishes with :attr:`reason`."""

    def feed(self, event: StreamEvent) -> list[Event]:
        if event.type == "raw_response_event":
            return self._model_event(event.data)
        if event.type == "agent_updated_stream_event":
            name = event.new_agent.name
            if name == self.agent:
                return []  # the starting agent announcing itself: not a switch
            previous, self.agent = self.agent, name
            return [MetadataEvent({"agent": name, "previous_agent": previous})]
        if event.name == "tool_called":
            return self._tool_called(event.item.raw_item)
        if event.name == "tool_output":
            return self._tool_output(event.item)
        return []

    def _model_event(self, data: TResponseStreamEvent) -> list[Event]:
        """One of the model's own stream events: text, reasoning, a tool call forming, how the response ended."""
        said = response_text(data)
        if said is not None:
            return said
        if data.type == "response.output_item.added":
            return self._call_added(data.output_index, data.item)
        if data.type == "response.function_call_arguments.delta":
            call_id = self._calls.get(data.output_index)
            return [ToolCallArgsDelta(call_id, data.delta)] if call_id is not None and data.delta else []
        if data.type == "response.created":
            self._calls.clear()
        elif data.type == "response.completed":
            self.reason = "stop"
        elif data.type == "response.incomplete":
            self.reason = incomplete_reason(data.response)
            usage = data.response.usage
            self.cut = (usage.input_tokens, usage.output_tokens) if usage is not None else (0, 0)
        return []

    def _call_added(self, output_index: int, item: Any) -> list[Event]:
        if _field(item, "type") != "function_call":
            return []
        name, call_id = _field(item, "name") or "tool", call_id_of(item)
        if name in self.handoffs or call_id in self.started:
            return []
        self._calls[output_index] = call_id
        self.started.add(call_id)
        out: list[Event] = [ToolCallStart(call_id, name)]
        arguments = _field(item, "arguments")
        if arguments:
            out.append(ToolCallArgsDelta(call_id, arguments))
        return out

    def _tool_called(self, raw: Any) -> list[Event]:
        call_id = call_id_of(raw)
        if call_id in self.started:
            return []  # streamed as the model wrote it
        self.started.add(call_id)
        out: list[Event] = [ToolCallStart(call_id, _field(raw, "name") or _field(raw, "type") or "tool")]
        arguments = _field(raw, "arguments")
        if arguments:
            out.append(ToolCallArgsDelta(call_id, arguments))
        return out

    def _tool_output(self, item: Any) -> list[Event]:
        call_id = call_id_of(item.raw_item)
        text = tool_output_text(getattr(item, "output", None))
        custom = getattr(item, "custom_data", None)
        structured = custom.get(STRUCTURED) if isinstance(custom, Mapping) else None
        if structured is not None and not text:
            text, structured = json.dumps(structured, ensure_ascii=False), None
        elif structured is not None and structured == {"result": text}:
            structured = None  # the text again, wrapped
        out: list[Event] = [ToolCallResult(call_id, text, is_error=call_id in self.denied)]
        if structured is not None:
            out.append(MetadataEvent({"tool_call_id": call_id, STRUCTURED: structured}))
        return out


def tool_output_text(output: object) -> str:
    """A tool's output as text: a string as it is, content items (MCP's) by their text, anything else as JSON."""
    if isinstance(output, str):
        return output
    if output is None:
        return ""
    items = output if isinstance(output, list) else [output]
    texts = [_item_text(item) for item in items]
    if all(t is not None for t in texts):
        return "\n".join(t for t in texts if t is not None)
    return json.dumps(output, default=str, ensure_ascii=False)


def _item_text(item: object) -> str | None:
    """A content item's text (``{"type": "text", "text": ...}``, or the SDK's models of it); ``None`` if it is not
    one."""
    kind = _field(item, "type")
    if kind == "text" or kind == "input_text" or kind == "output_text":
        text = item.get("text") if isinstance(item, Mapping) else getattr(item, "text", None)
        return text if isinstance(text, str) else None
    if kind == "image" or kind == "input_image":
        return "[image]"
    return None


def call_id_of(raw: Any) -> str:
    return _field(raw, "call_id") or _field(raw, "id") or "call"


def _field(raw: Any, name: str) -> str | None:
    value = raw.get(name) if isinstance(raw, Mapping) else getattr(raw, name, None)
    return value if isinstance(value, str) and value else None
