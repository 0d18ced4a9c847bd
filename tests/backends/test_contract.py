"""The backend contract, checked on every remote provider against its recorded wire bytes, parsed by its real SDK.

Each provider says the same things in its own vocabulary; this suite holds them all to one shape: text, usage and
a finish; a length finish; tool calls whose argument fragments follow their start; HTTP and in-stream failures as
named error events; a cut connection or a stream that ends early as a retryable error; and cancellation (of the run,
or closing the iterator) that reaches the upstream at once. What only one provider does lives in its own file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.backends import providers
from tests.backends.conftest import CANCEL_BUDGET_S, HELLO, cancel_mid_stream, collect, run, texts
from tests.backends.replay import ReplayServer
from tokenrelay.backends._remote import TranslatingBackend
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.events import ErrorEvent, FinishEvent, TextDelta, ToolCallArgsDelta, ToolCallStart, UsageEvent


@dataclass(frozen=True)
class HTTPFailure:
    """A refused request: the recorded error body, the status it came with, and the error event it must become."""

    fixture: str
    status: int
    code: str
    retryable: bool
    words: list[str]  # in the message
    logged: list[str]  # what the upstream said: in the log, never in the message
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamFailure:
    """A stream that fails part-way: the text before the failure, and the error event it must become."""

    fixture: str
    text_before: str
    code: str
    retryable: bool
    words: list[str]  # in the message
    logged: list[str]  # what the upstream said: in the log, never in the message
    message: str | None = None  # the whole message, where it is worth pinning down


@dataclass(frozen=True)
class Provider:
    name: str  # the fixtures' folder
    prefix: str  # how its error messages begin
    make: Callable[..., TranslatingBackend[Any, Any]]
    text_deltas: list[str]  # text.sse
    text_usage: UsageEvent
    length_fixture: str
    length_usage: UsageEvent
    tool_fixture: str
    tool_text: str
    tool_calls: dict[str, tuple[str, Any]]  # call id -> (tool name, parsed arguments)
    tool_usage: UsageEvent
    http_failures: list[HTTPFailure]
    stream_failures: list[StreamFailure]
    partial_text: str  # partial.sse, up to where it stops
    conversation_key: str  # where the request body carries the conversation

    def __str__(self) -> str:
        return self.name


OPENAI_CHAT = Provider(
    name="openai_chat",
    prefix="openai: ",
    make=providers.openai_chat,
    text_deltas=["The", " capital", " of", " France", " is", " Paris", "."],
    text_usage=UsageEvent(24, 8),
    length_fixture="openai_chat/length.sse",
    length_usage=UsageEvent(15, 4),
    tool_fixture="openai_chat/tool_calls.sse",
    tool_text="",
    tool_calls={
        "call_Qe4kX9nLr2VbTfW8yJ1sZcDm": ("get_weather", {"city": "Paris", "unit": "c"}),
        "call_7HnJv0pQa3LsKx5RbYwE2uTg": ("get_time", {"timezone": "Europe/Paris"}),
    },
    tool_usage=UsageEvent(88, 41),
    http_failures=[
        HTTPFailure(
            "openai_chat/error_401.json", 401, "auth_error", False, ["HTTP 401", "--api-key"], ["Incorrect API key"]
        ),
        HTTPFailure("openai_chat/error_404.json", 404, "not_found", False, ["HTTP 404", "--model"], ["gpt-4.2-nano"]),
        HTTPFailure(
            "openai_chat/error_429.json",
            429,
            "rate_limited",
            True,
            ["HTTP 429", "retry after 7s"],
            ["org-"],
            {"retry-after": "7"},
        ),
        HTTPFailure("openai_chat/error_500.json", 500, "upstream_error", True, ["HTTP 500"], ["had an error"]),
        HTTPFailure("openai_chat/error_500.json", 503, "upstream_error", True, ["HTTP 503"], ["had an error"]),
    ],
    stream_failures=[
        StreamFailure(
            "openai_chat/in_stream_error.sse", "Let me", "upstream_error", True, ["service failed"], ["had an error"]
        )
    ],
    partial_text="The capital of",
    conversation_key="messages",
)

OPENAI_RESPONSES = Provider(
    name="openai_responses",
    prefix="openai: ",
    make=providers.openai_responses,
    text_deltas=["The", " capital", " of", " France", " is", " Paris", "."],
    text_usage=UsageEvent(31, 8),
    length_fixture="openai_responses/incomplete.sse",
    length_usage=UsageEvent(18, 16),
    tool_fixture="openai_responses/reasoning_tool_call.sse",
    tool_text="",
    tool_calls={"call_V3oU8kQ2mR9xLp4sNd7bTe1Z": ("get_weather", {"city": "Paris"})},
    tool_usage=UsageEvent(62, 210),
    http_failures=[
        HTTPFailure(
            "openai_chat/error_429.json",
            429,
            "rate_limited",
            True,
            ["HTTP 429", "retry after 2s"],
            ["org-"],
            {"retry-after": "2"},
        ),
    ],
    stream_failures=[
        StreamFailure("openai_responses/failed.sse", "", "upstream_error", True, [], ["invalid content"]),
        StreamFailure(
            "openai_responses/error_event.sse", "", "rate_limited", True, ["rate limited"], ["Rate limit reached"]
        ),
    ],
    partial_text="The capital",
    conversation_key="input",
)

ANTHROPIC = Provider(
    name="anthropic",
    prefix="anthropic: ",
    make=providers.anthropic,
    text_deltas=["The capital", " of France is", " Paris."],
    text_usage=UsageEvent(25, 12),
    length_fixture="anthropic/max_tokens.sse",
    length_usage=UsageEvent(18, 4),
    tool_fixture="anthropic/tool_use.sse",
    tool_text="Okay, let's check the weather for Paris.",
    tool_calls={"toolu_01T1x1fJ34qAmk2tNTrN7Up6": ("get_weather", {"city": "Paris", "unit": "celsius"})},
    tool_usage=UsageEvent(472, 89),
    http_failures=[
        HTTPFailure("anthropic/error_401.json", 401, "auth_error", False, ["HTTP 401"], ["invalid x-api-key"]),
        HTTPFailure(
            "anthropic/error_429.json",
            429,
            "rate_limited",
            True,
            ["HTTP 429", "retry after 12s"],
            ["req_"],
            {"retry-after": "12"},
        ),
        HTTPFailure("anthropic/error_529.json", 529, "overloaded", True, ["HTTP 529", "overloaded"], ["Overloaded"]),
    ],
    stream_failures=[
        StreamFailure(
            "anthropic/overloaded_in_stream.sse",
            "The capital",
            "overloaded",
            True,
            ["overloaded"],
            ["Overloaded"],
            message="anthropic: the upstream service is overloaded",
        )
    ],
    partial_text="The capital",
    conversation_key="messages",
)

PROVIDERS = [OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC]
each_provider = pytest.mark.parametrize("provider", PROVIDERS, ids=str)


def error_and_finish(events: list[Any]) -> ErrorEvent:
    error, finish = events[-2:]
    assert isinstance(error, ErrorEvent)
    assert finish == FinishEvent("error")
    return error


@each_provider
async def test_streams_text_usage_and_finish(replay: ReplayServer, provider: Provider) -> None:
    replay.reply(f"{provider.name}/text.sse")
    events = await collect(provider.make(replay))
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta(t) for t in provider.text_deltas]
    assert texts(events) == "The capital of France is Paris."
    assert events[-2:] == [provider.text_usage, FinishEvent("stop")]


@each_provider
async def test_a_cut_off_answer_is_a_length_finish(replay: ReplayServer, provider: Provider) -> None:
    replay.reply(provider.length_fixture)
    events = await collect(provider.make(replay))
    assert texts(events) == "Once upon a time"
    assert events[-2:] == [provider.length_usage, FinishEvent("length")]


@each_provider
async def test_tool_calls_with_their_argument_fragments(replay: ReplayServer, provider: Provider) -> None:
    replay.reply(provider.tool_fixture)
    events = await collect(provider.make(replay))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(call_id, name) for call_id, (name, _) in provider.tool_calls.items()]
    args: dict[str, str] = {}
    for i, e in enumerate(events):
        if isinstance(e, ToolCallArgsDelta):
            # Every fragment belongs to a call that has started, and comes after its start.
            assert ToolCallStart(e.call_id, provider.tool_calls[e.call_id][0]) in events[:i]
            args[e.call_id] = args.get(e.call_id, "") + e.delta
    assert {call_id: json.loads(a) for call_id, a in args.items()} == {
        call_id: arguments for call_id, (_, arguments) in provider.tool_calls.items()
    }
    first_args = next(i for i, e in enumerate(events) if isinstance(e, ToolCallArgsDelta))
    assert isinstance(events[first_args - 1], ToolCallStart)
    assert texts(events) == provider.tool_text
    assert events[-2:] == [provider.tool_usage, FinishEvent("tool_calls")]


@pytest.mark.parametrize(
    ("provider", "failure"),
    [(p, f) for p in PROVIDERS for f in p.http_failures],
    ids=[f"{p}-{f.status}" for p in PROVIDERS for f in p.http_failures],
)
async def test_http_errors_become_error_events(
    replay: ReplayServer, provider: Provider, failure: HTTPFailure, caplog: pytest.LogCaptureFixture
) -> None:
    replay.reply(failure.fixture, status=failure.status, headers=failure.headers)
    with caplog.at_level(logging.WARNING, "tokenrelay.backends"):
        error = error_and_finish(await run(provider.make(replay)))
    assert (error.code, error.retryable) == (failure.code, failure.retryable)
    assert error.message.startswith(provider.prefix)
    for word in failure.words:
        assert word in error.message
    assert_logged_not_shown(caplog, error, failure.logged)


def assert_logged_not_shown(caplog: pytest.LogCaptureFixture, error: ErrorEvent, words: list[str]) -> None:
    """The upstream's own words went to the log, with the run's id, and not to the user."""
    logged = [r.getMessage() for r in caplog.records if r.name == "tokenrelay.backends"]
    for word in words:
        assert word not in error.message
        assert any(word in line and line.startswith("run ") for line in logged), logged


@pytest.mark.parametrize(
    ("provider", "failure"),
    [(p, f) for p in PROVIDERS for f in p.stream_failures],
    ids=[f"{p}-{f.fixture.split('/')[1]}" for p in PROVIDERS for f in p.stream_failures],
)
async def test_an_error_inside_the_stream_keeps_the_text_before_it(
    replay: ReplayServer, provider: Provider, failure: StreamFailure, caplog: pytest.LogCaptureFixture
) -> None:
    replay.reply(failure.fixture)
    with caplog.at_level(logging.WARNING, "tokenrelay.backends"):
        events = await run(provider.make(replay))
    assert texts(events) == failure.text_before
    error = error_and_finish(events)
    assert (error.code, error.retryable) == (failure.code, failure.retryable)
    assert error.message.startswith(provider.prefix)
    for word in failure.words:
        assert word in error.message
    if failure.message is not None:
        assert error.message == failure.message
    assert_logged_not_shown(caplog, error, failure.logged)


@each_provider
async def test_connection_cut_mid_stream_is_a_retryable_error(
    replay: ReplayServer, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    replay.reply(f"{provider.name}/partial.sse", then="cut")
    with caplog.at_level(logging.WARNING, "tokenrelay.backends"):
        events = await run(provider.make(replay))
    assert texts(events) == provider.partial_text
    error = error_and_finish(events)
    assert (error.code, error.retryable) == ("connection_error", True)
    assert error.message.startswith(provider.prefix)
    assert_logged_not_shown(caplog, error, ["127.0.0.1", "RemoteProtocolError"])  # the host and the cause


@each_provider
async def test_a_stream_that_ends_before_the_answer_is_a_retryable_error(
    replay: ReplayServer, provider: Provider
) -> None:
    replay.reply(f"{provider.name}/partial.sse")  # a clean end of the body, but no finish
    with pytest.raises(BackendError) as caught:
        await collect(provider.make(replay))
    assert caught.value.code == "connection_error"
    assert caught.value.retryable
    assert caught.value.message.startswith(provider.prefix)


@each_provider
async def test_cancelling_the_run_closes_the_upstream_response(replay: ReplayServer, provider: Provider) -> None:
    reply = replay.reply(f"{provider.name}/partial.sse", then="hold")
    backend = provider.make(replay)
    took, events = await cancel_mid_stream(backend, reply)
    assert took < CANCEL_BUDGET_S, f"the upstream saw the client leave after {took * 1000:.0f} ms"
    assert texts(events) == provider.partial_text
    assert backend.stats.cancelled == 1


@each_provider
async def test_closing_the_iterator_closes_the_upstream_response(replay: ReplayServer, provider: Provider) -> None:
    reply = replay.reply(f"{provider.name}/partial.sse", then="hold")
    backend = provider.make(replay)
    gen = backend.stream(HELLO, GenerateOptions())
    assert isinstance(await anext(gen), TextDelta)
    await gen.aclose()
    await asyncio.wait_for(reply.client_left.wait(), CANCEL_BUDGET_S)
    assert backend.stats.cancelled == 1


@each_provider
async def test_a_tool_message_goes_as_labelled_user_text(replay: ReplayServer, provider: Provider) -> None:
    replay.reply(f"{provider.name}/text.sse")
    await collect(provider.make(replay), [Message("user", "What is 6 x 7?"), Message("tool", "42")])
    last = replay.requests[0].json()[provider.conversation_key][-1]
    assert last["role"] == "user"
    assert last["content"].endswith("[tool output]\n42")


@each_provider
async def test_load_has_nothing_left_to_check(replay: ReplayServer, provider: Provider) -> None:
    # The configuration was checked when the backend was built: load() is a no-op, and sends nothing.
    provider.make(replay).load()
    assert replay.requests == []
