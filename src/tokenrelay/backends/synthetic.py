"""A deterministic backend for demos, benchmarks and tests: no model, exact timing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any

from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import BackendError, GenerateOptions, Message, NoSetup
from tokenrelay.events import Event, FinishEvent, TextDelta, UsageEvent

__all__ = ["SyntheticBackend"]

_PASSAGE = (
    "Tokens stream to you the moment they are produced. A run lives on its own task, apart from the "
    "connection that started it, so a closed tab or a buffering proxy costs nothing but a reconnect. "
)


class SyntheticBackend(NoSetup):
    """Streams ``tokens`` deltas, one every ``interval_ms``.

    Each delta is exactly ``token`` when given. Otherwise, with ``text``, the words of that text, once (``tokens``
    is then ignored); by default the words of a short passage echoing the user's message, cycled until ``tokens``
    deltas have been sent. ``fail_after`` raises a backend error after
    that many deltas; ``initial_delay_ms`` keeps silent before the first one (to exercise heartbeats).
    """

    name = "synthetic"

    def __init__(
        self,
        *,
        tokens: int = 48,
        interval_ms: float = 20.0,
        token: str | None = None,
        text: str | None = None,
        fail_after: int | None = None,
        initial_delay_ms: float = 0.0,
    ) -> None:
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        if interval_ms < 0 or initial_delay_ms < 0:
            raise ValueError("delays must be >= 0")
        self.tokens = tokens
        self.interval_s = interval_ms / 1000
        self.token = token
        self.text = text
        self.fail_after = fail_after
        self.initial_delay_s = initial_delay_ms / 1000
        self.stats = StreamStats()

    def describe(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "interval_ms": self.interval_s * 1000, **self.stats.as_dict()}

    def _pieces(self, messages: Sequence[Message]) -> Iterator[str]:
        if self.token is not None:
            return itertools.repeat(self.token)
        if self.text is not None:
            return iter(_split_words(self.text))
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = _split_words(f"You said: {last.strip()[:200]}. {_PASSAGE}")
        return itertools.cycle(words)

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        total = len(_split_words(self.text)) if self.text is not None and self.token is None else self.tokens
        limit = total if options.max_tokens is None else min(total, options.max_tokens)
        pieces = self._pieces(messages)
        loop = asyncio.get_running_loop()
        with self.stats.track():
            if self.initial_delay_s:
                await asyncio.sleep(self.initial_delay_s)
            # Sleep to an absolute schedule so that timing error does not accumulate over a long stream.
            start = loop.time()
            for i in range(limit):
                if self.fail_after is not None and i >= self.fail_after:
                    raise BackendError("backend_error", f"synthetic failure after {i} tokens")
                if i and self.interval_s:
                    delay = start + i * self.interval_s - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif i:
                    # As fast as possible, but yielding between deltas as a real upstream does: a backend that
                    # never yields would hold the event loop (and every other stream) for its whole answer.
                    await asyncio.sleep(0)
                yield TextDelta(next(pieces))
            yield UsageEvent(input_tokens=sum(len(m.content.split()) for m in messages), output_tokens=limit)
            yield FinishEvent("length" if limit < total else "stop")


def _split_words(text: str) -> list[str]:
    """Words with their following whitespace attached, so that joining the pieces gives the text back."""
    out: list[str] = []
    word = ""
    for ch in text:
        if word and not word[-1].isspace() and ch.isspace():
            word += ch
        elif word and word[-1].isspace() and not ch.isspace():
            out.append(word)
            word = ch
        else:
            word += ch
    if word:
        out.append(word)
    return out
