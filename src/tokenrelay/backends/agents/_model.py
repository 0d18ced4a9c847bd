"""The model an agent talks to, made per run: OpenAI's Responses or Chat Completions API through the SDK's models.

The SDK turns a Chat Completions stream into Responses events but drops the chunk's ``finish_reason`` on the way:
an answer cut at the token limit would end as a completed response, indistinguishable from a finished one. The
chat model here notes each stream's finish reason as its chunks pass, so the run can end with ``length``.

It also sends the conversation in the form every Chat Completions server takes: a tool's output that is only text
(an MCP tool's content items) as a string rather than content parts, and an assistant turn that only calls tools
with an empty text rather than none; llama.cpp's server refuses the other forms (and answers 500).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, cast

from tokenrelay.backends._openai import finish_reason
from tokenrelay.events import FinishReason

if TYPE_CHECKING:
    from agents.models.interface import Model
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionChunk

__all__ = ["FinishNotes", "make_model"]


class FinishNotes:
    """The finish reason of the last Chat Completions stream of one run (``None`` before any, or for Responses)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: FinishReason | None = None


def make_model(api: Literal["chat", "responses"], name: str, client: AsyncOpenAI, notes: FinishNotes) -> Model:
    if api == "responses":
        from agents import OpenAIResponsesModel

        return OpenAIResponsesModel(model=name, openai_client=client)
    return _noting_chat_model()(name, client, notes)


@functools.cache
def _noting_chat_model() -> Callable[[str, AsyncOpenAI, FinishNotes], Model]:
    """The SDK's Chat Completions model, noting its streams' finish reasons (made once: the SDK loads lazily)."""
    from agents import OpenAIChatCompletionsModel

    class NotingChatModel(OpenAIChatCompletionsModel):
        def __init__(self, name: str, client: AsyncOpenAI, notes: FinishNotes) -> None:
            super().__init__(model=name, openai_client=cast("AsyncOpenAI", _PlainClient(client)))
            self.notes = notes

        async def _fetch_response(self, *args: Any, **kwargs: Any) -> Any:
            got = await super()._fetch_response(*args, **kwargs)
            if isinstance(got, tuple) and len(got) == 2:
                response, stream = got
                return response, _NotedStream(stream, self.notes)
            return got

    return NotingChatModel


class _PlainClient:
    """An ``AsyncOpenAI`` client, passed through, whose ``chat.completions.create`` sends :func:`plain_messages`."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self.chat = _Namespace(completions=_Namespace(create=self._create))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def _create(self, **kwargs: Any) -> Any:
        if isinstance(kwargs.get("messages"), list):
            kwargs["messages"] = plain_messages(kwargs["messages"])
        return await self._client.chat.completions.create(**kwargs)


class _Namespace:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


def plain_messages(messages: list[Any]) -> list[Any]:
    """Chat Completions ``messages`` with a tool's text-only content parts joined into one string, and an
    assistant turn without text (only tool calls) given an empty one."""
    out: list[Any] = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if message.get("role") == "tool" and isinstance(content, list) and content and all(map(_is_text, content)):
                message = {**message, "content": "\n".join(part["text"] for part in content)}
            elif message.get("role") == "assistant" and content is None and message.get("tool_calls"):
                message = {**message, "content": ""}
        out.append(message)
    return out


def _is_text(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


class _NotedStream:
    """An ``AsyncStream`` of chunks, passed through; each choice-0 ``finish_reason`` is noted on the way."""

    def __init__(self, stream: Any, notes: FinishNotes) -> None:
        self._stream = stream
        self._notes = notes
        self.response = getattr(stream, "response", None)  # the SDK copies the request id from it

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in self._stream:
            for choice in chunk.choices:
                if choice.index == 0 and choice.finish_reason is not None:
                    self._notes.last = finish_reason(choice.finish_reason)
            yield chunk

    async def close(self) -> None:
        await self._stream.close()
