"""OpenAI Responses API streaming (``--openai-api responses``).

The Responses stream is semantic: ``response.output_text.delta`` text, ``response.reasoning_summary_text.delta``
and ``response.reasoning_text.delta`` reasoning, ``response.output_item.added`` (a ``function_call`` item) then
``response.function_call_arguments.delta`` tool calls, and one terminal event — ``response.completed``,
``response.incomplete`` or ``response.failed`` — with the usage. An ``error`` event can come at any point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tokenrelay.backends._client_tools import RESPONSES_SUPPORTS, responses_params
from tokenrelay.backends._errors import in_stream_error
from tokenrelay.backends._openai import (
    OpenAIBackendBase,
    incomplete_reason,
    response_text,
    wire_incomplete_reason,
    wire_response_text,
)
from tokenrelay.backends._remote import Upstream
from tokenrelay.backends._tools import responses_input
from tokenrelay.backends._wire import OPENAI, WireUpstream, open_wire
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

__all__ = ["OpenAIResponsesBackend", "ResponsesTranslator", "ResponsesWireTranslator"]


class _ResponsesStream:
    """What a Responses translator keeps between events, and how the stream must end."""

    def __init__(self) -> None:
        self.reason: FinishReason | None = None
        self._calls: dict[str, str] = {}  # output item id -> call id

    def finish(self) -> FinishEvent:
        if self.reason is None:
            raise BackendError(
                "connection_error", "openai: the stream ended before the response completed", retryable=True
            )
        return FinishEvent(self.reason)


class ResponsesTranslator(_ResponsesStream):
    """Responses stream events in, tokenrelay events out. Pure: no I/O, one instance per stream."""

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


def _usage(response: Response) -> list[Event]:
    usage = response.usage
    return [UsageEvent(usage.input_tokens, usage.output_tokens)] if usage is not None else []


class ResponsesWireTranslator(_ResponsesStream):
    """:class:`ResponsesTranslator` for the fast path: the same events, from each event's JSON data (a dict)."""

    def feed(self, event: dict[str, Any]) -> list[Event]:
        said = wire_response_text(event)
        if said is not None:
            return said
        kind = event.get("type")
        if kind == "response.output_item.added":
            return self._item_added(event["item"])
        if kind == "response.function_call_arguments.delta":
            item_id, delta = event["item_id"], event.get("delta")
            return [ToolCallArgsDelta(self._calls.get(item_id, item_id), delta)] if delta else []
        if kind == "response.completed":
            self.reason = "tool_calls" if self._calls else "stop"
            return _wire_usage(event["response"])
        if kind == "response.incomplete":
            self.reason = wire_incomplete_reason(event["response"])
            return _wire_usage(event["response"])
        if kind == "response.failed":
            error = event["response"].get("error")
            raise in_stream_error(
                "openai", error.get("code") if error else None, error.get("message") if error else "the response failed"
            )
        if kind == "error":
            raise in_stream_error("openai", event.get("code"), event.get("message"))
        return []

    def _item_added(self, item: dict[str, Any]) -> list[Event]:
        if item.get("type") != "function_call":
            return []
        call_id = item["call_id"]
        self._calls[item.get("id") or call_id] = call_id
        out: list[Event] = [ToolCallStart(call_id, item["name"])]
        arguments = item.get("arguments")
        if arguments:
            out.append(ToolCallArgsDelta(call_id, arguments))
        return out


def _wire_usage(response: dict[str, Any]) -> list[Event]:
    usage = response.get("usage")
    return [UsageEvent(usage.get("input_tokens"), usage.get("output_tokens"))] if usage is not None else []


class OpenAIResponsesBackend(OpenAIBackendBase["ResponseStreamEvent"]):
    """Streams ``/responses`` from ``base_url`` (default: OpenAI)."""

    api = "responses"
    supports = RESPONSES_SUPPORTS
    translator = ResponsesTranslator
    wire_translator = ResponsesWireTranslator

    def params(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.config.model, "input": responses_input(messages)}
        if self.system_prompt:
            params["instructions"] = self.system_prompt
        max_tokens = options.max_tokens or self.max_tokens
        if max_tokens is not None:
            params["max_output_tokens"] = max_tokens
        temperature = self.temperature if options.temperature is None else options.temperature
        if temperature is not None:
            params["temperature"] = temperature
        params.update(responses_params(options.client_tools))
        return params

    async def open_upstream(self, params: dict[str, Any]) -> Upstream[ResponseStreamEvent]:
        stream: AsyncStream[ResponseStreamEvent] = await self.client.responses.create(stream=True, **params)
        return stream

    async def open_wire(self, params: dict[str, Any]) -> WireUpstream:
        call = self.client.responses.with_streaming_response.create(stream=True, **params)
        return await open_wire(call, OPENAI, self.name)
