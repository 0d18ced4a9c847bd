"""What the server tests share: reading an SSE response, and a backend a test can hold mid-answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import GenerateOptions, Message
from tokenrelay.events import Event, FinishEvent, TextDelta
from tokenrelay.sse import Comment, ServerSentEvent, SSEDecoder


async def read_stream(response: httpx.Response, *, comments: bool = False) -> list[ServerSentEvent | Comment]:
    decoder = SSEDecoder(comments=comments)
    out: list[ServerSentEvent | Comment] = []
    async for chunk in response.aiter_raw():
        out.extend(decoder.feed(chunk))
    return out


def payloads(events: list[ServerSentEvent | Comment]) -> list[dict[str, object]]:
    return [json.loads(e.data) for e in events if isinstance(e, ServerSentEvent)]


class GatedBackend:
    """Says "one", waits for ``gate``, says "two": lets a test act while a run is mid-answer."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[list[Message]] = []
        self.stats = StreamStats()
        self.cancelled = asyncio.Event()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return self.stats.as_dict()

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        self.calls.append(list(messages))
        try:
            yield TextDelta("one")
            await self.gate.wait()
            yield TextDelta(" two")
            yield FinishEvent("stop")
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise
