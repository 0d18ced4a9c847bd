"""Anthropic Messages streaming.

The stream is ``message_start`` (input usage), then per content block a ``content_block_start`` (``text``,
``thinking`` or ``tool_use`` with its id and name), ``content_block_delta`` events (``text_delta``,
``thinking_delta``, ``input_json_delta`` fragments of the tool input) and a ``content_block_stop``; then
``message_delta`` with the stop reason and output usage, and ``message_stop``. An ``error`` event (``overloaded_error``
at busy times) can come instead of the rest; the SDK raises it and it is mapped like an HTTP error.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tokenrelay._extras import require
from tokenrelay.backends._client_tools import ANTHROPIC_SUPPORTS, anthropic_params
from tokenrelay.backends._openai import public_url
from tokenrelay.backends._remote import TranslatingBackend, Upstream
from tokenrelay.backends._tools import anthropic_turns, text_turn
from tokenrelay.backends._wire import ANTHROPIC, WireUpstream, open_wire, shared_text
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.events import (
    Event,
    FinishEvent,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic, AsyncStream
    from anthropic.types import RawContentBlockDeltaEvent, RawContentBlockStartEvent, RawMessageStreamEvent

__all__ = ["AnthropicBackend", "MessagesTranslator", "MessagesWireTranslator"]

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class _MessagesStream:
    """What a Messages translator keeps between events, and how the stream must end."""

    def __init__(self) -> None:
        self.reason: FinishReason | None = None
        self.stopped = False
        self._input_tokens: int | None = None
        self._calls: dict[int, str] = {}  # content block index -> tool use id

    def finish(self) -> FinishEvent:
        if not self.stopped and self.reason is None:
            raise BackendError(
                "connection_error", "anthropic: the stream ended before the message was complete", retryable=True
            )
        return FinishEvent(self.reason or "stop")


class MessagesTranslator(_MessagesStream):
    """Messages stream events in, tokenrelay events out. Pure: no I/O, one instance per stream."""

    def feed(self, event: RawMessageStreamEvent) -> list[Event]:
        if event.type == "message_start":
            self._input_tokens = _input_tokens(event.message.usage)
        elif event.type == "content_block_start":
            return self._block_start(event)
        elif event.type == "content_block_delta":
            return self._block_delta(event)
        elif event.type == "message_delta":
            if event.delta.stop_reason is not None:
                self.reason = _STOP.get(event.delta.stop_reason, "stop")
            usage = event.usage
            inputs = _input_tokens(usage) if usage.input_tokens is not None else self._input_tokens
            return [UsageEvent(inputs, usage.output_tokens)]
        elif event.type == "message_stop":
            self.stopped = True
        return []

    def _block_start(self, event: RawContentBlockStartEvent) -> list[Event]:
        block = event.content_block
        if block.type in ("tool_use", "server_tool_use", "mcp_tool_use"):
            call_id = getattr(block, "id", "") or f"toolu_{event.index}"
            self._calls[event.index] = call_id
            return [ToolCallStart(call_id, getattr(block, "name", ""))]
        tool_use_id = getattr(block, "tool_use_id", None)
        if isinstance(tool_use_id, str):  # a server tool's result, e.g. web_search_tool_result
            content = getattr(block, "content", None)
            dumped = [c.model_dump() for c in content] if isinstance(content, list) else content
            output = json.dumps(dumped, default=str) if not isinstance(dumped, str) else dumped
            return [ToolCallResult(tool_use_id, output, is_error=bool(getattr(block, "is_error", False)))]
        if block.type == "text" and block.text:
            return [TextDelta(block.text)]
        if block.type == "thinking" and block.thinking:
            return [ReasoningDelta(block.thinking)]
        return []

    def _block_delta(self, event: RawContentBlockDeltaEvent) -> list[Event]:
        delta = event.delta
        if delta.type == "text_delta":
            return [TextDelta(delta.text)] if delta.text else []
        if delta.type == "thinking_delta":
            return [ReasoningDelta(delta.thinking)] if delta.thinking else []
        if delta.type == "input_json_delta":
            call_id = self._calls.get(event.index, f"toolu_{event.index}")
            return [ToolCallArgsDelta(call_id, delta.partial_json)] if delta.partial_json else []
        return []  # signature_delta, citations_delta: nothing to show


class MessagesWireTranslator(_MessagesStream):
    """:class:`MessagesTranslator` for the fast path: the same events, from each event's JSON data (a dict).

    A server tool's result (rare, and dumped whole as the SDK's models dump it) is handed to the SDK's models.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sdk = MessagesTranslator()

    def feed(self, event: dict[str, Any]) -> list[Event]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            self._input_tokens = _wire_input_tokens(event["message"].get("usage"))
        elif kind == "message_delta":
            stop_reason = event["delta"].get("stop_reason")
            if stop_reason is not None:
                self.reason = _STOP.get(stop_reason, "stop")
            usage = event["usage"]
            inputs = _wire_input_tokens(usage) if usage.get("input_tokens") is not None else self._input_tokens
            return [UsageEvent(inputs, usage.get("output_tokens"))]
        elif kind == "message_stop":
            self.stopped = True
        return []

    def _block_start(self, event: dict[str, Any]) -> list[Event]:
        block, index = event["content_block"], event["index"]
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
            call_id = block.get("id") or f"toolu_{index}"
            self._calls[index] = call_id
            return [ToolCallStart(call_id, block.get("name") or "")]
        if isinstance(block.get("tool_use_id"), str):
            from anthropic.types import RawContentBlockStartEvent

            return self._sdk._block_start(RawContentBlockStartEvent.construct(**event))
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind == "thinking" and block.get("thinking"):
            return [ReasoningDelta(block["thinking"])]
        return []

    def _block_delta(self, event: dict[str, Any]) -> list[Event]:
        delta = event["delta"]
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [TextDelta(shared_text(text))] if text else []
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            return [ReasoningDelta(shared_text(thinking))] if thinking else []
        if kind == "input_json_delta":
            index, partial = event["index"], delta.get("partial_json")
            return [ToolCallArgsDelta(self._calls.get(index, f"toolu_{index}"), partial)] if partial else []
        return []  # signature_delta, citations_delta: nothing to show


def _input_tokens(usage: Any) -> int | None:
    """All the prompt's tokens: fresh ones plus those written to and read from the prompt cache."""
    parts = [
        getattr(usage, k, None) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    known = [p for p in parts if isinstance(p, int)]
    return sum(known) if known else None


def _wire_input_tokens(usage: dict[str, Any] | None) -> int | None:
    """:func:`_input_tokens` over the usage's JSON data."""
    if not usage:
        return None
    known = [usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    counted = [k for k in known if isinstance(k, int)]
    return sum(counted) if counted else None


@functools.cache
def _takes_temperature() -> bool:
    """Whether the installed SDK (and so the API it was generated from) still has sampling parameters.

    Newer Messages APIs dropped ``temperature``; sending it there would be refused, so it is sent only to an API
    that knows it.
    """
    from anthropic.resources.messages import AsyncMessages

    return "temperature" in inspect.signature(AsyncMessages.create).parameters


def anthropic_messages(messages: Sequence[Message]) -> tuple[list[str], list[dict[str, str]]]:
    """System texts apart, and turns that alternate user/assistant starting with the user, as the API requires.

    Consecutive turns of one role are joined; ``tool`` text counts as the user's; an assistant turn before any user
    turn has nothing to answer and is dropped.
    """
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for role, content in map(text_turn, messages):
        if role == "system":
            system.append(content)
            continue
        if not turns and role == "assistant":
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    return system, turns


class AnthropicBackend(TranslatingBackend["AsyncAnthropic", "RawMessageStreamEvent"]):
    """Streams ``/v1/messages`` from Anthropic (or ``base_url``, e.g. a gateway)."""

    name = "anthropic"
    supports = ANTHROPIC_SUPPORTS
    translator = MessagesTranslator
    wire_translator = MessagesWireTranslator

    def __init__(
        self,
        *,
        model: str | None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 1024,
        temperature: float | None = None,
        system_prompt: str | None = None,
        thinking_budget: int | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        fast_path: bool = True,
    ) -> None:
        require("anthropic", "the anthropic backend", extra="anthropic")
        if not model:
            raise BackendError("bad_config", "--backend anthropic needs a model name: --model NAME")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise BackendError("bad_config", f"--base-url must be an http:// or https:// URL, not {base_url!r}")
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise BackendError(
                "bad_config", "--backend anthropic needs an API key: --api-key KEY (or ANTHROPIC_API_KEY)"
            )
        if thinking_budget is not None and thinking_budget >= max_tokens:
            raise BackendError(
                "bad_config", f"--thinking-budget ({thinking_budget}) must be below --max-tokens ({max_tokens})"
            )
        super().__init__()
        self.model = model
        self.base_url = base_url
        self.api_key = key
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt
        self.thinking_budget = thinking_budget
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.fast_path = fast_path

    def new_client(self) -> AsyncAnthropic:
        """The SDK's client; on the fast path over the lean HTTP transport (``_http.py``)."""
        from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient

        http = None
        if self.fast_path:
            from tokenrelay.backends._http import lean_client

            http = lean_client(DefaultAsyncHttpxClient)
        return AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            http_client=http,
        )

    async def start(self) -> None:
        from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient

        from tokenrelay.backends._warm import canned_transport, warm_up

        http = DefaultAsyncHttpxClient(transport=canned_transport(b"event: message_stop\ndata: {}\n\n"))
        await warm_up(self, AsyncAnthropic(api_key="warm-up", base_url="http://warm-up.invalid", http_client=http))

    def describe(self) -> dict[str, Any]:
        base_url = public_url(self.base_url or "https://api.anthropic.com")
        return {"model": self.model, "base_url": base_url, **self.stats.as_dict()}

    def params(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        system, turns = anthropic_turns(messages)
        if self.system_prompt:
            system.insert(0, self.system_prompt)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.max_tokens or self.max_tokens,
            "messages": turns,
        }
        if system:
            params["system"] = "\n\n".join(system)
        if self.thinking_budget:
            # Extended thinking fixes the temperature at 1; the API refuses any other.
            params["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_budget}
        else:
            temperature = self.temperature if options.temperature is None else options.temperature
            if temperature is not None and _takes_temperature():
                params["temperature"] = min(temperature, 1.0)  # Anthropic's range is 0..1
        params.update(anthropic_params(options.client_tools))
        return params

    async def open_upstream(self, params: dict[str, Any]) -> Upstream[RawMessageStreamEvent]:
        stream: AsyncStream[RawMessageStreamEvent] = await self.client.messages.create(stream=True, **params)
        return stream

    async def open_wire(self, params: dict[str, Any]) -> WireUpstream:
        call = self.client.messages.with_streaming_response.create(stream=True, **params)
        return await open_wire(call, ANTHROPIC, self.name)
