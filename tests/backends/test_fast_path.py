"""The fast path (the body read as bytes by tokenrelay's SSE decoder and orjson) against the SDK path (the SDK's
own stream and models): the same events for every recorded stream, refusal and cut, over real sockets.

The contract suite (test_contract.py) already runs on the fast path, the default; here the two paths are compared
event for event, and what only the fast path does is pinned down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.backends import providers
from tests.backends.conftest import collect, run
from tests.backends.replay import FIXTURES, ReplayServer, Reply
from tokenrelay.backends._remote import TranslatingBackend
from tokenrelay.backends.base import BackendError
from tokenrelay.events import ErrorEvent, Event, FinishEvent, TextDelta

Make = Callable[..., TranslatingBackend[Any, Any]]
MAKERS: dict[str, Make] = {
    "openai_chat": providers.openai_chat,
    "openai_responses": providers.openai_responses,
    "anthropic": providers.anthropic,
}


def queue(replay: ReplayServer, reply: Reply) -> None:
    # The replay server queues fixtures by name; a generated body is queued as the Reply it would have made.
    replay._replies.append(reply)


async def both_paths(replay: ReplayServer, make: Make, reply: Callable[[], Reply]) -> tuple[list[Event], list[Event]]:
    """The events of one run on the fast path and one on the SDK path, each given a fresh ``reply()``."""
    out = []
    for fast in (True, False):
        queue(replay, reply())
        backend = make(replay, fast_path=fast)
        assert backend.fast_path is fast
        out.append(await run(backend))
        await backend.close()
    return out[0], out[1]


def _cases() -> list[tuple[str, Path, int, str]]:
    cases = []
    for provider in MAKERS:
        for path in sorted((FIXTURES / provider).iterdir()):
            status = int(path.stem.split("_")[1]) if path.suffix == ".json" else 200
            cases.append((provider, path, status, "end"))
            if path.name == "partial.sse":
                cases.append((provider, path, status, "cut"))
    return cases


CASES = _cases()
BODIES = {path: path.read_bytes() for _, path, _, _ in CASES}


@pytest.mark.parametrize(
    ("provider", "path", "status", "then"),
    CASES,
    ids=[f"{p}/{f.name}-{then}" if then != "end" else f"{p}/{f.name}" for p, f, _, then in CASES],
)
async def test_every_recorded_stream_gives_the_same_events_on_both_paths(
    replay: ReplayServer, provider: str, path: Path, status: int, then: Any
) -> None:
    content_type = "application/json" if path.suffix == ".json" else "text/event-stream; charset=utf-8"
    body = BODIES[path]
    fast, sdk = await both_paths(
        replay, MAKERS[provider], lambda: Reply(body, status=status, content_type=content_type, then=then)
    )
    assert fast == sdk
    assert isinstance(fast[-1], FinishEvent)


async def test_a_stream_that_stays_open_after_done_still_finishes(replay: ReplayServer) -> None:
    # [DONE] ends the answer: the rest of the body is read only briefly (for connection reuse), never waited for.
    reply = replay.reply("openai_chat/text.sse", then="hold")
    backend = providers.openai_chat(replay)
    async with asyncio.timeout(5):
        events = await collect(backend)
        await asyncio.wait_for(reply.client_left.wait(), 1)
    assert events[-1] == FinishEvent("stop")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The capital of France is Paris."


async def test_the_connection_is_reused_after_a_whole_stream(replay: ReplayServer) -> None:
    replay.reply("openai_chat/text.sse")
    replay.reply("openai_chat/text.sse")
    backend = providers.openai_chat(replay)
    await collect(backend)
    await collect(backend)
    assert len(replay.requests) == 2
    assert len(replay._connections) == 1  # both requests on one keep-alive connection


@pytest.mark.parametrize("provider", list(MAKERS))
async def test_an_event_that_is_not_json_is_a_named_upstream_error(replay: ReplayServer, provider: str) -> None:
    event = b"event: content_block_delta\n" if provider == "anthropic" else b""
    queue(replay, Reply(event + b"data: {not json\n\n"))
    with pytest.raises(BackendError) as caught:
        await collect(MAKERS[provider](replay))
    assert caught.value.code == "upstream_error"
    assert "not JSON" in caught.value.message
    assert "{not json" not in caught.value.message  # the upstream's bytes go to the log only


@pytest.mark.parametrize(
    "body",
    [b"event: error\ndata: upstream exploded\n\n", b"event: error\ndata: \n\n"],
    ids=["text", "empty"],
)
async def test_an_anthropic_error_event_without_json_is_the_same_error(replay: ReplayServer, body: bytes) -> None:
    fast, sdk = await both_paths(replay, providers.anthropic, lambda: Reply(body))
    assert fast == sdk
    error = fast[-2]
    assert isinstance(error, ErrorEvent)
    assert error.message.startswith("anthropic: ")
