"""OpenAI Responses API streaming (``--openai-api responses``).

The Responses stream is semantic: ``response.output_text.delta`` text, ``response.reasoning_summary_text.delta``
and ``response.reasoning_text.delta`` reasoning, ``response.output_item.added`` (a ``function_call`` item) then
``response.function_call_arguments.delta`` tool calls, and one terminal event — ``response.completed``,
``response.incomplete`` or ``response.failed`` — with the usage. An ``error`` event can come at any point.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from tokenrelay.backends._errors import in_stream_error, upstream_errors
from tokenrelay.backends._openai import OpenAIBackendBase
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.events import (
    Event,
    FinishEvent,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageEvent,
)

if TYPE_CHECKING:
    from openai.types.responses import Response, ResponseStreamEvent

__all__ = ["OpenAIResponsesBackend", "ResponsesTranslator"]


class ResponsesTranslator:
    """Responses stream events in, tokenrelay events out. Pure: no I/O, one instance per stream."""

    def __init__(self) -> None:
        self.reason: FinishReason | None = None
        self._calls: dict[str, str] = {}  # output item id -> call id

    def feed(self, event: ResponseStreamEvent) -> list[Event]:
        if event.type == "response.output_text.delta" or event.type == "response.refusal.delta":
            return [TextDelta(event.delta)] if event.delta else []
        if event.type == "response.reasoning_summary_text.delta" or event.type == "response.reasoning_text.delta":
            return [ReasoningDelta(event.delta)] if event.delta else []
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
            details = event.response.incomplete_details
            self.reason = "content_filter" if details and details.reason == "content_filter" else "length"
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


def _input(messages: Sequence[Message]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "user", "content": f"[tool output]\n{m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class OpenAIResponsesBackend(OpenAIBackendBase):
    """Streams ``/responses`` from ``base_url`` (default: OpenAI)."""

    api = "responses"

    def params(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.config.model, "input": _input(messages)}
        if self.system_prompt:
            params["instructions"] = self.system_prompt
        max_tokens = options.max_tokens or self.max_tokens
        if max_tokens is not None:
            params["max_output_tokens"] = max_tokens
        temperature = self.temperature if options.temperature is None else options.temperature
        if temperature is not None:
            params["temperature"] = temperature
        return params

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        translator = ResponsesTranslator()
        with self.stats.track():
            with upstream_errors("openai"):
                events = await self.client.responses.create(stream=True, **self.params(messages, options))
                try:
                    async for event in events:
                        for out in translator.feed(event):
                            yield out
                finally:
                    await events.close()
            yield translator.finish()
