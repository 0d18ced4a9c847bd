"""Generated streams (hypothesis): any sequence of well-formed events, served over a real socket, gives the same
events on the fast path as on the SDK path — text, reasoning, tool calls and their fragments, usage, finishes,
in-stream errors and streams that end early alike.

Texts are any Unicode but lone surrogates, which no provider sends and ``orjson`` refuses (the SDK's ``json``
would accept their ``\\ud800`` escapes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backends.conftest import HELLO
from tests.backends.replay import ReplayServer, Reply
from tests.backends.test_fast_path import MAKERS, queue
from tokenrelay.backends._remote import TranslatingBackend
from tokenrelay.backends.base import BackendError, GenerateOptions

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
MAYBE_TEXT = st.none() | TEXT
COUNT = st.none() | st.integers(0, 10**6)
ID = st.sampled_from(["", "call_a", "call_b", "item_1", "toolu_x"])
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        line = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out.append((f"event: {name}\n" if name else "") + f"data: {line}\n\n")
    return "".join(out).encode()


class Paths:
    """One loop, one replay server and a backend per path for a whole test: an example costs two requests."""

    def __init__(self, provider: str) -> None:
        self.runner = asyncio.Runner()
        self.replay = ReplayServer()
        self.runner.run(self.replay.__aenter__())
        make = MAKERS[provider]
        self.backends = [make(self.replay, fast_path=True), make(self.replay, fast_path=False)]

    def outcomes(self, body: bytes) -> list[list[object]]:
        return [self.runner.run(self._outcome(backend, body)) for backend in self.backends]

    async def _outcome(self, backend: TranslatingBackend[Any, Any], body: bytes) -> list[object]:
        queue(self.replay, Reply(body))
        out: list[object] = []
        try:
            async with asyncio.timeout(10):
                async for event in backend.stream(HELLO, GenerateOptions()):
                    out.append(event)
        except BackendError as exc:
            out.append((exc.code, exc.message, exc.retryable, exc.retry_after))
        return out

    def close(self) -> None:
        for backend in self.backends:
            self.runner.run(backend.close())
        self.runner.run(self.replay.__aexit__())
        self.runner.close()


@contextlib.contextmanager
def paths(provider: str) -> Iterator[Callable[[list[tuple[str | None, Any]]], None]]:
    """A check that one generated stream gives the same events (or the same error) on both paths."""
    both = Paths(provider)

    def check(events: list[tuple[str | None, Any]]) -> None:
        fast, sdk = both.outcomes(sse(events))
        assert fast == sdk

    try:
        yield check
    finally:
        both.close()


# Chat Completions


tool_call = st.fixed_dictionaries(
    {"index": st.integers(0, 2)},
    optional={
        "id": st.none() | ID,
        "type": st.just("function"),
        "function": st.none() | st.fixed_dictionaries({}, optional={"name": MAYBE_TEXT, "arguments": MAYBE_TEXT}),
    },
)
delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": MAYBE_TEXT,
        "refusal": st.none(),
        "reasoning_content": MAYBE_TEXT,
        "reasoning": MAYBE_TEXT,
        "tool_calls": st.none() | st.lists(tool_call, max_size=3),
    },
)
choice = st.fixed_dictionaries(
    {
        "index": st.sampled_from([0, 0, 0, 1]),
        "delta": delta,
        "finish_reason": st.none() | st.sampled_from(["stop", "length", "tool_calls", "content_filter", "other"]),
    },
    optional={"logprobs": st.none()},
)
usage = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6), "total_tokens": st.just(0)}
)
chunk = st.fixed_dictionaries(
    {
        "id": st.just("chatcmpl-1"),
        "object": st.just("chat.completion.chunk"),
        "created": st.just(1),
        "model": st.just("m"),
        "choices": st.lists(choice, max_size=2),
    },
    optional={"usage": st.none() | usage},
)
chat_error = st.fixed_dictionaries(
    {
        "error": st.fixed_dictionaries(
            {"message": MAYBE_TEXT, "type": st.none() | st.sampled_from(["server_error", "x"])}
        )
    }
)


def test_chat_streams() -> None:
    @SETTINGS
    @given(st.lists(st.tuples(st.none(), chunk), max_size=8), st.none() | chat_error, st.booleans())
    def stream(chunks: list[tuple[None, Any]], error: Any, done: bool) -> None:
        events: list[tuple[str | None, Any]] = list(chunks)
        if error is not None:
            events.append((None, error))
        if done:
            events.append((None, "[DONE]"))
        check(events)

    with paths("openai_chat") as check:
        stream()


# Responses

response = st.fixed_dictionaries(
    {
        "id": st.just("resp_1"),
        "object": st.just("response"),
        "created_at": st.just(1),
        "model": st.just("m"),
        "output": st.just([]),
        "status": st.just("completed"),
        "usage": st.none()
        | st.fixed_dictionaries(
            {"input_tokens": st.integers(0, 99), "output_tokens": st.integers(0, 99), "total_tokens": st.just(0)}
        ),
        "incomplete_details": st.none()
        | st.fixed_dictionaries({"reason": st.sampled_from(["max_output_tokens", "content_filter"])}),
        "error": st.none() | st.fixed_dictionaries({"code": st.sampled_from(["server_error", "x"]), "message": TEXT}),
    }
)
item = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("function_call"),
            "id": st.none() | ID,
            "call_id": ID.filter(bool),
            "name": TEXT,
            "arguments": TEXT,
        }
    ),
    st.fixed_dictionaries({"type": st.just("message"), "id": ID, "role": st.just("assistant"), "content": st.just([])}),
)


def typed(kind: str, **fields: Any) -> Any:
    return st.fixed_dictionaries({"type": st.just(kind), **fields})


responses_event = st.one_of(
    *(
        typed(kind, delta=TEXT, item_id=ID, output_index=st.just(0), content_index=st.just(0))
        for kind in (
            "response.output_text.delta",
            "response.refusal.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
        )
    ),
    typed("response.output_item.added", item=item, output_index=st.just(0)),
    typed("response.function_call_arguments.delta", item_id=ID, delta=TEXT, output_index=st.just(0)),
    typed("response.output_text.done", text=TEXT, item_id=ID, output_index=st.just(0), content_index=st.just(0)),
)
terminal = st.one_of(
    *(typed(kind, response=response) for kind in ("response.completed", "response.incomplete", "response.failed")),
    typed("error", code=st.none() | st.sampled_from(["rate_limit_exceeded", "x"]), message=TEXT, param=st.none()),
)


def test_responses_streams() -> None:
    @SETTINGS
    @given(st.lists(responses_event, max_size=8), st.none() | terminal)
    def stream(events: list[Any], end: Any) -> None:
        check([(e["type"], e) for e in [*events, *([end] if end is not None else [])]])

    with paths("openai_responses") as check:
        stream()


# Anthropic Messages

block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": TEXT, "signature": st.just("")}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["tool_use", "server_tool_use"]), "id": ID, "name": TEXT, "input": st.just({})}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("web_search_tool_result"),
            "tool_use_id": ID,
            "content": st.lists(
                st.fixed_dictionaries(
                    {"type": st.just("web_search_result"), "url": TEXT, "title": TEXT, "encrypted_content": TEXT}
                ),
                max_size=2,
            ),
        }
    ),
)
block_delta = st.one_of(
    st.fixed_dictionaries({"type": st.just("text_delta"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("thinking_delta"), "thinking": TEXT}),
    st.fixed_dictionaries({"type": st.just("input_json_delta"), "partial_json": TEXT}),
    st.fixed_dictionaries({"type": st.just("signature_delta"), "signature": TEXT}),
)
message_usage = st.fixed_dictionaries(
    {"input_tokens": COUNT, "output_tokens": st.integers(0, 99)},
    optional={"cache_creation_input_tokens": COUNT, "cache_read_input_tokens": COUNT},
)
message = st.fixed_dictionaries(
    {
        "id": st.just("msg_1"),
        "type": st.just("message"),
        "role": st.just("assistant"),
        "model": st.just("m"),
        "content": st.just([]),
        "stop_reason": st.none(),
        "usage": message_usage,
    }
)
index = st.integers(0, 2)
message_delta = typed(
    "message_delta",
    delta=st.fixed_dictionaries(
        {"stop_reason": st.none() | st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal", "new"])}
    ),
    usage=message_usage,
)
anthropic_middle = st.one_of(
    typed("content_block_start", index=index, content_block=block),
    typed("content_block_delta", index=index, delta=block_delta),
    typed("content_block_stop", index=index),
    typed("ping"),
)
anthropic_error = typed(
    "error", error=st.fixed_dictionaries({"type": st.sampled_from(["overloaded_error", "x"]), "message": TEXT})
)


def often(part: Any) -> Any:
    """``[part]`` three times in four, else ``[]``."""
    return st.tuples(st.integers(0, 3), part).map(lambda p: [p[1]] if p[0] else [])


def seldom(part: Any) -> Any:
    """``[part]`` once in four, else ``[]``."""
    return st.tuples(st.integers(0, 3), part).map(lambda p: [] if p[0] else [p[1]])


def test_anthropic_streams() -> None:
    # In the order a stream has them, each part possibly missing (a stream cut short, a gateway's quirks).
    @SETTINGS
    @given(
        often(typed("message_start", message=message)),
        st.lists(anthropic_middle, max_size=8),
        seldom(anthropic_error),
        often(message_delta),
        often(typed("message_stop")),
    )
    def stream(start: list[Any], middle: list[Any], error: list[Any], delta: list[Any], stop: list[Any]) -> None:
        check([(e["type"], e) for e in [*start, *middle, *error, *delta, *stop]])

    with paths("anthropic") as check:
        stream()
