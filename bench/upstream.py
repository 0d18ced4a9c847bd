"""The real-upstream section: a fake OpenAI-compatible server in its own process, and one stream read through it as
fast as it goes by the OpenAI SDK, by tokenrelay's ``openai`` backend (SDK path and fast path) and by plain httpx
with ``json`` (the floor).

The fake upstream (pinned to the client's core) answers ``POST /v1/chat/completions`` with pre-encoded
``chat.completion.chunk`` frames, cycling through a few different tokens (never one chunk many times in a row),
then the usage chunk and ``[DONE]``. The model name carries the length: ``fake-<chunks>``.

``python -m bench.upstream [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from bench.servers import CLIENT_CPU, HOST, ROOT, SERVER_CPU, _limits, free_port

_TOKENS = ["~ a", "~ b", "~c", "~ de", "~f", "~ ghi", "~.", "~ jk"]


def _frame(content: str) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1750000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


FRAMES = [_frame(t) for t in _TOKENS]
TAIL = (
    b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1750000000,"model":"fake",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1750000000,"model":"fake",'
    b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\ndata: [DONE]\n\n'
)
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
_BATCH = 64  # frames per write when going as fast as it can


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length))
            chunks = int(str(body["model"]).rsplit("-", 1)[1])
            writer.write(_HEAD)
            for start in range(0, chunks, _BATCH):
                data = b"".join(FRAMES[i % len(FRAMES)] for i in range(start, min(chunks, start + _BATCH)))
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(TAIL), TAIL))
            await writer.drain()


def _upstream_main(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.start_server(_serve, HOST, port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@contextlib.contextmanager
def fake_upstream() -> Iterator[str]:
    """The fake upstream in its own process (on the client's core); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--serve", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_limits(CLIENT_CPU),
    )
    try:
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                break
            time.sleep(0.05)
        yield f"http://{HOST}:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(5)


async def _sdk(url: str, chunks: int) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    n = 0
    stream = await client.chat.completions.create(model=f"fake-{chunks}", messages=[], stream=True)
    async for _ in stream:
        n += 1
    await client.close()
    return n


def _backend(fast: bool) -> Callable[[str, int], Awaitable[int]]:
    async def read(url: str, chunks: int) -> int:
        from tokenrelay.backends.base import GenerateOptions, Message
        from tokenrelay.backends.openai_chat import OpenAIChatBackend

        backend = OpenAIChatBackend(model=f"fake-{chunks}", base_url=url, max_retries=0, fast_path=fast)
        n = 0
        async for _ in backend.stream([Message("user", "hi")], GenerateOptions()):
            n += 1
        await backend.close()
        return n

    return read


async def _httpx(url: str, chunks: int) -> int:
    import httpx

    n = 0
    async with httpx.AsyncClient() as client:
        body = {"model": f"fake-{chunks}", "messages": [], "stream": True}
        async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
                    n += 1
    return n


READERS: dict[str, Callable[[str, int], Awaitable[int]]] = {
    "openai SDK, iterated": _sdk,
    "tokenrelay backend, SDK path": _backend(False),
    "tokenrelay backend, fast path": _backend(True),
    "plain httpx + json": _httpx,
}


def single(chunks: int, repeats: int) -> dict[str, Any]:
    """Chunks per second for each reader (median of ``repeats``), this process pinned to the server's core."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, SERVER_CPU)
    out: dict[str, Any] = {}
    with fake_upstream() as url:
        for name, read in READERS.items():
            asyncio.run(read(url, 100))  # warm-up: imports, the first connection
            rates = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                n = asyncio.run(read(url, chunks))
                rates.append(n / (time.perf_counter() - t0))
            out[name] = {"chunks_s": statistics.median(rates), "runs": rates}
    return out


def table(results: dict[str, Any]) -> str:
    sdk = results.get("tokenrelay backend, SDK path", {}).get("chunks_s")
    rows = [
        "**Real upstream, one stream** (fake OpenAI-compatible server in its own process; chunks/s, medians)",
        "",
        "| reader | chunks/s | vs tokenrelay SDK path |",
        "|---|--:|--:|",
    ]
    for name, r in results.items():
        rows.append(f"| {name} | {r['chunks_s']:,.0f} | {r['chunks_s'] / sdk:.2f}× |" if sdk else f"| {name} | |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _upstream_main(int(sys.argv[2]))
    else:
        quick = "--quick" in sys.argv
        result = single(20_000 if quick else 100_000, 3)
        print(table(result))
        print(json.dumps(result))
