"""OpenAI Responses API streaming (``--openai-api responses``).

The Responses stream is semantic: ``response.output_text.delta`` text, ``response.reasoning_summary_text.delta``
and ``response.reasoning_text.delta`` reasoning, ``response.output_item.added`` (a ``function_call`` item) then
``response.function_call_arguments.delta`` tool calls, and one terminal event — ``response.completed``,
``response.incomplete`` or ``response.failed`` — with the usage. An ``error`` event can come at any point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tokenrelay.backends._errors import in_stream_error
from tokenrelay.backends._openai import OpenAIBackendBase, incomplete_reason, response_text
from tokenrelay.backends._remote import Upstream
from tokenrelay.backends._tools import text_turns
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.events import (
    Event,
    FinishEvent,
    FinishReason,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageEvent,
)

if TYPE_CHECKING:
    from openai import AsyncStream
    from openai.types.responses import Response, ResponseStreamEvent

__all__ = ["OpenAIResponsesBackend", "ResponsesTranslator"]


class ResponsesTranslator:
    """Responses stream events in, tokenrelay events out. Pure: no I/O, one instance per stream."""

    def __init__(self) -> None:
        self.reason: FinishReason | None = None
        self._calls: dict[str, str] = {}  # output item id -> call id

    def feed(self, event: ResponseStreamEvent) -> list[Event]:
        said = response_text(event)
        if said is not None:
            return said
        if event.type == "response.output_item.added":
            item = event.item
            if item.type != "function_call":
                return []
            self._calls[item.id or item.call_id] = item.call_id
            out: list[Event] = [ToolCallStart(item.call_id, item.name)]
            if item.arguments:
                out.append(ToolCallArgsDelta(item.call_id, item.arguments))
            return out
        if event.type == "response.function_call_arguments.delta":
            call_id = self._calls.get(event.item_id, event.item_id)
            return [ToolCallArgsDelta(call_id, event.delta)] if event.delta else []
        if event.type == "response.completed":
            self.reason = "tool_calls" if self._calls else "stop"
            return _usage(event.response)
        if event.type == "response.incomplete":
            self.reason = incomplete_reason(event.response)
            return _usage(event.response)
        if event.type == "response.failed":
            error = event.response.error
            raise in_stream_error(
                "openai", error.code if error else None, error.message if error else "the response failed"
            )
        if event.type == "error":
            raise in_stream_error("openai", event.code, event.message)
        return []

    def finish(self) -> FinishEvent:
        if self.reason is None:
            raise BackendError(
                "connection_error", "openai: the stream ended before the response completed", retryable=True
            )
        return FinishEvent(self.reason)


def _usage(response: Response) -> list[Event]:
    usage = response.usage
    return [UsageEvent(usage.input_tokens, usage.output_tokens)] if usage is not None else []


class OpenAIResponsesBackend(OpenAIBackendBase["ResponseStreamEvent"]):
    """Streams ``/responses`` from ``base_url`` (default: OpenAI)."""

    api = "responses"
    translator = ResponsesTranslator

    def params(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.config.model, "input": text_turns(messages)}
        if self.system_prompt:
            params["instructions"] = self.system_prompt
        max_tokens = options.max_tokens or self.max_tokens
        if max_tokens is not None:
            params["max_output_tokens"] = max_tokens
        temperature = self.temperature if options.temperature is None else options.temperature
        if temperature is not None:
            params["temperature"] = temperature
        return params

    async def open_upstream(self, params: dict[str, Any]) -> Upstream[ResponseStreamEvent]:
        stream: AsyncStream[ResponseStreamEvent] = await self.client.responses.create(stream=True, **params)
        return stream
