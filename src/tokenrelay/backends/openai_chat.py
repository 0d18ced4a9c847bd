"""OpenAI Chat Completions streaming, from OpenAI or any compatible server (vLLM, llama.cpp, Ollama, LM Studio).

Each ``chat.completion.chunk`` becomes events: ``delta.content`` text, ``delta.reasoning_content`` (or
``delta.reasoning``, where a server sends its model's thinking) reasoning, ``delta.tool_calls`` tool calls whose
arguments arrive in fragments keyed by ``index``, the final chunk's ``usage`` (asked for with
``stream_options.include_usage``) and ``finish_reason``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Unpack

from tokenrelay.backends._client_tools import CHAT_SUPPORTS, chat_params
from tokenrelay.backends._openai import OpenAIBackendBase, OpenAIOptions, finish_reason
from tokenrelay.backends._remote import Upstream
from tokenrelay.backends._tools import chat_completion_messages
from tokenrelay.backends._wire import OPENAI, WireUpstream, open_wire, shared_text
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
    from openai import AsyncStream
    from openai.types.chat import ChatCompletionChunk

__all__ = ["ChatTranslator", "ChatWireTranslator", "OpenAIChatBackend"]


class _ChatStream:
    """What a Chat Completions translator keeps between chunks, and how the stream must end."""

    def __init__(self) -> None:
        self.reason: FinishReason | None = None
        self._calls: dict[int, str] = {}  # tool call index -> call id

    def finish(self) -> FinishEvent:
        if self.reason is None:
            raise BackendError(
                "connection_error", "openai: the stream ended before the model finished its answer", retryable=True
            )
        return FinishEvent(self.reason)


class ChatTranslator(_ChatStream):
    """Chat Completions chunks in, tokenrelay events out. Pure: no I/O, one instance per stream."""

    def feed(self, chunk: ChatCompletionChunk) -> list[Event]:
        out: list[Event] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # n > 1 is not asked for; a stray second choice is not this answer
            delta = choice.delta
            extra = delta.model_extra or {}
            reasoning = extra.get("reasoning_content") or extra.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningDelta(reasoning))
            if delta.content:
                out.append(TextDelta(delta.content))
            for call in delta.tool_calls or ():
                call_id = self._calls.get(call.index)
                if call_id is None:
                    call_id = call.id or f"call_{call.index}"
                    self._calls[call.index] = call_id
                    name = call.function.name if call.function and call.function.name else ""
                    out.append(ToolCallStart(call_id, name))
                if call.function and call.function.arguments:
                    out.append(ToolCallArgsDelta(call_id, call.function.arguments))
            if choice.finish_reason:
                self.reason = finish_reason(choice.finish_reason)
        if chunk.usage is not None:
            out.append(UsageEvent(chunk.usage.prompt_tokens, chunk.usage.completion_tokens))
        return out


class ChatWireTranslator(_ChatStream):
    """:class:`ChatTranslator` for the fast path: the same events, from each chunk's JSON data (a dict)."""

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index") != 0:
                continue  # n > 1 is not asked for; a stray second choice is not this answer
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningDelta(shared_text(reasoning)))
            content = delta.get("content")
            if content:
                out.append(TextDelta(shared_text(content)))
            calls = delta.get("tool_calls")
            if calls:
                self._tool_calls(calls, out)
            reason = choice.get("finish_reason")
            if reason:
                self.reason = finish_reason(reason)
        usage = chunk.get("usage")
        if usage is not None:
            out.append(UsageEvent(usage.get("prompt_tokens"), usage.get("completion_tokens")))
        return out

    def _tool_calls(self, calls: list[dict[str, Any]], out: list[Event]) -> None:
        for call in calls:
            index = call["index"]
            function = call.get("function") or {}
            call_id = self._calls.get(index)
            if call_id is None:
                call_id = call.get("id") or f"call_{index}"
                self._calls[index] = call_id
                out.append(ToolCallStart(call_id, function.get("name") or ""))
            arguments = function.get("arguments")
            if arguments:
                out.append(ToolCallArgsDelta(call_id, arguments))


class OpenAIChatBackend(OpenAIBackendBase["ChatCompletionChunk"]):
    """Streams ``/chat/completions`` from ``base_url`` (default: OpenAI)."""

    api = "chat"
    supports = CHAT_SUPPORTS
    translator = ChatTranslator
    wire_translator = ChatWireTranslator

    def __init__(self, *, model: str | None, include_usage: bool = True, **options: Unpack[OpenAIOptions]) -> None:
        super().__init__(model=model, **options)
        self.include_usage = include_usage

    def params(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        """The request body (less ``stream``), for this conversation and these overrides."""
        params: dict[str, Any] = {
            "model": self.config.model,
            "messages": chat_completion_messages(messages, self.system_prompt),
        }
        max_tokens = options.max_tokens or self.max_tokens
        if max_tokens is not None:
            # OpenAI's reasoning models refuse the older name; compatible servers mostly know only it.
            params["max_completion_tokens" if self.config.talks_to_openai else "max_tokens"] = max_tokens
        temperature = self.temperature if options.temperature is None else options.temperature
        if temperature is not None:
            params["temperature"] = temperature
        if self.include_usage:
            params["stream_options"] = {"include_usage": True}
        params.update(chat_params(options.client_tools))
        return params

    async def open_upstream(self, params: dict[str, Any]) -> Upstream[ChatCompletionChunk]:
        stream: AsyncStream[ChatCompletionChunk] = await self.client.chat.completions.create(stream=True, **params)
        return stream

    async def open_wire(self, params: dict[str, Any]) -> WireUpstream:
        call = self.client.chat.completions.with_streaming_response.create(stream=True, **params)
        return await open_wire(call, OPENAI, self.name)
