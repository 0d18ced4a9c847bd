"""The real-upstream section: a fake OpenAI-compatible server in its own process, and one stream read through it as
fast as it goes by the OpenAI SDK, by tokenrelay's ``openai`` backend (SDK path and fast path) and by plain httpx
with ``json`` (the floor).

The fake upstream (pinned to the client's core) answers ``POST /v1/chat/completions`` with pre-encoded
``chat.completion.chunk`` frames, cycling through a few different tokens (never one chunk many times in a row),
then the usage chunk and ``[DONE]``. The model name carries the length: ``fake-<chunks>`` goes as fast as it can;
``fake-<chunks>-<interval_ms>-<delay_ms>`` paces the stream, one chunk every ``interval_ms`` on an absolute schedule
after ``delay_ms`` of silence (the concurrent section, bench/real_upstream.py, asks this of every relay).

``python -m bench.upstream [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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


_CHUNKED = [b"%x\r\n%s\r\n" % (len(f), f) for f in FRAMES]  # one frame per HTTP chunk, as a real upstream sends
_END = b"%x\r\n%s\r\n0\r\n\r\n" % (len(TAIL), TAIL)


class _Paced:
    """One paced stream: its writer, where it is in its schedule, and a future set when it has ended."""

    __slots__ = ("done", "interval", "n", "sent", "start", "writer")

    def __init__(self, writer: asyncio.StreamWriter, n: int, start: float, interval: float) -> None:
        self.writer, self.n, self.start, self.interval, self.sent = writer, n, start, interval, 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Pacer:
    """Every paced stream on one 1 ms timer wheel: one wake-up per millisecond for all of them, not one per chunk.

    With 1,000 streams at 50 chunks/s a timer per chunk would cost this process (which shares its core with the load
    client) more than the relays it feeds; the wheel costs a write per chunk and little else. Each stream keeps its
    own absolute schedule (``start + i * interval``), so a late tick catches up instead of drifting.
    """

    def __init__(self) -> None:
        self.slots: dict[int, list[_Paced]] = {}
        self.last = int(time.monotonic() * 1000)
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self.run())  # kept here: the loop holds tasks only weakly

    def add(self, stream: _Paced) -> None:
        self.slots.setdefault(max(int(stream.start * 1000), self.last + 1), []).append(stream)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.slots:
                self.wake.clear()
                await self.wake.wait()
            await asyncio.sleep(0.001)
            now_ms = int(time.monotonic() * 1000)
            for ms in range(self.last + 1, now_ms + 1):
                for stream in self.slots.pop(ms, ()):
                    self._send(stream, now_ms)
            self.last = now_ms

    def _send(self, stream: _Paced, now_ms: int) -> None:
        writer = stream.writer
        if writer.is_closing():  # the relay hung up (its client left): nothing more to send
            stream.done.set_result(None)
            return
        writer.write(_CHUNKED[stream.sent % len(_CHUNKED)])
        stream.sent += 1
        if stream.sent >= stream.n:
            writer.write(_END)
            stream.done.set_result(None)
            return
        due = int((stream.start + stream.sent * stream.interval) * 1000)
        self.slots.setdefault(max(due, now_ms + 1), []).append(stream)


async def _serve(pacer: _Pacer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length))
            spec = [float(x) for x in str(body["model"]).split("-")[1:]]
            chunks = int(spec[0])
            writer.write(_HEAD)
            if len(spec) == 3:
                paced = _Paced(writer, chunks, time.monotonic() + spec[2] / 1000, spec[1] / 1000)
                pacer.add(paced)
                await paced.done
                continue
            for start in range(0, chunks, _BATCH):
                data = b"".join(FRAMES[i % len(FRAMES)] for i in range(start, min(chunks, start + _BATCH)))
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(TAIL), TAIL))
            await writer.drain()


def _upstream_main(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.start_server(functools.partial(_serve, _Pacer()), HOST, port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@contextlib.contextmanager
def fake_upstream() -> Iterator[str]:
    """The fake upstream in its own process (on the client's core); yields its base URL."""
    with fake_upstream_process() as (url, _):
        yield url


@contextlib.contextmanager
def fake_upstream_process() -> Iterator[tuple[str, int]]:
    """The fake upstream in its own process (on the client's core); yields its base URL and its pid."""
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
        yield f"http://{HOST}:{port}/v1", proc.pid
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
