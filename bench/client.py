"""The load client: raw asyncio protocols on uvloop, one per stream, no HTTP library.

It runs in its own process (pinned to the other core) and speaks just enough HTTP/1.1: one GET per connection,
the status line, then the body bytes as they come. It never decodes the chunked framing or the SSE frames: the
token is a character that occurs nowhere else in any peer's stream (``~``: not in JSON punctuation, hex chunk
sizes, base64url run ids or headers), so the tokens in a read are ``data.count(b"~")`` — one C call per read,
which is what lets one Python process keep up with the bare ASGI loop.

``python -m bench.client '<json config>'`` prints one JSON object of results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import statistics
import struct
import sys
import time
from array import array
from typing import Any

TOKEN = b"~"
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body
LINGER_RST = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT, so 10,000-stream runs do not exhaust ports
BUCKET_S = 1e-4  # gap histogram resolution: 0.1 ms
BUCKETS = 600_000  # up to 60 s
MERGE = 10  # buckets: reads less than 1 ms apart count as one arrival

now = time.perf_counter


class Window:
    """The measurement window, shared by all streams (``inf`` until it opens)."""

    __slots__ = ("end", "gaps", "start", "tokens")

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.tokens = 0
        self.gaps = array("l", bytes(8 * BUCKETS))


class Stream(asyncio.Protocol):
    __slots__ = (
        "bytes",
        "done",
        "first",
        "headers",
        "last",
        "reads",
        "request",
        "sent",
        "status",
        "tail",
        "tokens",
        "transport",
        "window",
    )

    def __init__(self, request: bytes, window: Window) -> None:
        self.request = request
        self.window = window
        self.transport: asyncio.Transport | None = None
        self.headers = b""
        self.status = 0
        self.sent = 0.0
        self.first = 0.0
        self.last = 0.0
        self.tokens = 0
        self.bytes = 0
        self.reads = 0
        self.tail = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        if self.sent:  # uvloop may call connection_made after create_connection has returned
            self.sent = now()
            self.transport.write(self.request)

    def send(self) -> None:
        self.sent = now()
        if self.transport is not None:
            self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        t = now()
        if not self.status:
            self.headers += data
            end = self.headers.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.headers[9:12])
            data = self.headers[end + 4 :]
            self.headers = b""
            if self.status != 200:
                self.finish()
                return
            if not data:
                return
        self.bytes += len(data)
        self.reads += 1
        n = data.count(TOKEN)
        if n:
            window = self.window
            if self.first:
                if window.start <= t < window.end:
                    window.tokens += n
                    gap = int((t - self.last) / BUCKET_S)
                    if gap >= MERGE:  # reads closer than 1 ms are one arrival (a write split in two, or a burst)
                        window.gaps[gap if gap < BUCKETS else BUCKETS - 1] += 1
            else:
                self.first = t
                if window.start <= t < window.end:
                    window.tokens += n
            self.last = t
            self.tokens += n
        if (self.tail + data[-7:]).endswith(END):
            self.finish()
        self.tail = data[-6:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.finish()


def request_bytes(host: str, port: int, path: str, body: Any = None) -> bytes:
    """A GET of ``path``; with ``body`` (a JSON value), a POST of it (an OpenAI-compatible proxy's endpoint)."""
    head = f"Host: {host}:{port}\r\nAccept: text/event-stream\r\n"
    if body is None:
        return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\n{head}Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


async def open_stream(host: str, port: int, path: str, window: Window, body: Any = None) -> Stream:
    loop = asyncio.get_running_loop()
    request = request_bytes(host, port, path, body)
    _, stream = await loop.create_connection(lambda: Stream(request, window), host, port)
    return stream


def percentile(hist: array[int], q: float) -> float | None:
    total = sum(hist)
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for i, count in enumerate(hist):
        if count:
            seen += count
            if seen > rank:
                return (i + 0.5) * BUCKET_S
    return None


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def load(cfg: dict[str, Any]) -> dict[str, Any]:
    """``streams`` concurrent streams; tokens and gaps counted in a window once all have their first token."""
    host, port, path = cfg["host"], cfg["port"], cfg["path"]
    count, rate, window_s = cfg["streams"], cfg["rate"], cfg["window_s"]
    window = Window()
    streams: list[Stream] = []
    gate = asyncio.Semaphore(cfg.get("connect_concurrency", 200))
    failed = 0

    async def connect() -> None:
        nonlocal failed
        async with gate:
            try:
                stream = await open_stream(host, port, path, window, cfg.get("body"))
            except OSError:
                failed += 1
                return
            stream.send()
            streams.append(stream)

    started = now()
    ramp = asyncio.gather(*(connect() for _ in range(count)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ramp, cfg.get("ramp_timeout_s", 30))
    # Wait (boundedly) until the streams have their first token, so the window measures the steady state.
    deadline = now() + cfg.get("first_token_timeout_s", 10)
    while now() < deadline and sum(1 for s in streams if s.first) < len(streams):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    ramp_s = now() - started
    await asyncio.sleep(cfg.get("settle_s", 2.0))
    cpu0 = cpu_s()
    window.start = now()
    window.end = window.start + window_s
    wall0 = time.time()
    await asyncio.sleep(window_s)
    cpu1 = cpu_s()
    wall1 = time.time()
    for s in streams:
        s.close()
    ttfts = sorted(s.first - s.sent for s in streams if s.first)
    asked = count * rate * window_s
    p50, p99 = percentile(window.gaps, 0.50), percentile(window.gaps, 0.99)
    return {
        "streams": count,
        "connected": len(streams),
        "failed": failed + sum(1 for s in streams if s.status not in (0, 200)),
        "ramp_s": round(ramp_s, 2),
        "without_token": sum(1 for s in streams if not s.first),
        "statuses": sorted({s.status for s in streams}),
        "asked": asked,
        "delivered": window.tokens,
        "share": window.tokens / asked if asked else None,
        "gap_p50_ms": p50 * 1000 if p50 is not None else None,
        "gap_p99_ms": p99 * 1000 if p99 is not None else None,
        "writes": sum(window.gaps),
        "ttft_p50_ms": ttfts[len(ttfts) // 2] * 1000 if ttfts else None,
        "client_cpu": (cpu1 - cpu0) / window_s,
        "window_wall": [wall0, wall1],
    }


async def single(cfg: dict[str, Any]) -> dict[str, Any]:
    """One stream as fast as the server goes: tokens, bytes and reads per second over ``duration_s``."""
    host, port, path, duration = cfg["host"], cfg["port"], cfg["path"], cfg["duration_s"]
    runs = []
    for _ in range(cfg.get("repeats", 3)):
        window = Window()
        stream = await open_stream(host, port, path, window)
        stream.send()
        deadline = now() + 10
        while not stream.first and not stream.done.done() and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        tokens0, bytes0, reads0, t0, cpu0 = stream.tokens, stream.bytes, stream.reads, now(), cpu_s()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stream.done), duration)
        elapsed = now() - t0
        runs.append(
            {
                "tokens_s": (stream.tokens - tokens0) / elapsed,
                "mb_s": (stream.bytes - bytes0) / elapsed / 1e6,
                "reads_s": (stream.reads - reads0) / elapsed,
                "client_cpu": (cpu_s() - cpu0) / elapsed,
            }
        )
        stream.close()
        await asyncio.sleep(cfg.get("pause_s", 0.5))  # let the server notice and clean up
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {"runs": runs}


async def ttft(cfg: dict[str, Any]) -> dict[str, Any]:
    """Request-to-first-token on an idle server, one stream at a time (the connection is opened first)."""
    host, port, path = cfg["host"], cfg["port"], cfg["path"]
    samples = []
    window = Window()
    for _ in range(cfg.get("count", 30)):
        stream = await open_stream(host, port, path, window)
        await asyncio.sleep(0.01)
        stream.send()
        deadline = now() + 10
        # Polling is fine: the arrival time is taken in data_received, not here.
        while not stream.first and not stream.done.done() and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        if stream.first:
            samples.append((stream.first - stream.sent) * 1000)
        stream.close()
        await asyncio.sleep(cfg.get("pause_s", 0.05))
    samples.sort()
    return {
        "ttft_p50_ms": statistics.median(samples) if samples else None,
        "ttft_p90_ms": samples[int(len(samples) * 0.9)] if samples else None,
        "samples": len(samples),
    }


async def warm(cfg: dict[str, Any]) -> dict[str, Any]:
    """A few requests, each until its first token (or its end): imports, caches and first-request work (a relay's
    first upstream request too) done before measuring."""
    statuses = []
    window = Window()
    for _ in range(cfg.get("count", 3)):
        stream = await open_stream(cfg["host"], cfg["port"], cfg["path"], window, cfg.get("body"))
        stream.send()
        deadline = now() + 10
        while not stream.tokens and not stream.done.done() and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        statuses.append(stream.status)
        stream.close()
    await asyncio.sleep(0.2)
    return {"statuses": statuses}


async def burst(cfg: dict[str, Any]) -> dict[str, Any]:
    """``count`` requests sent at the same instant on connections opened beforehand: how fast runs start.

    Reports first-token p50/p90 (from the common send time) and runs started per second (streams with a first
    token, over the time from the send to the last of those first tokens).
    """
    host, port, path, count = cfg["host"], cfg["port"], cfg["path"], cfg["count"]
    gate = asyncio.Semaphore(cfg.get("connect_concurrency", 200))
    streams: list[Stream] = []
    window = Window()  # one for all: a window's gap histogram is 4.8 MB, and the burst counts no gaps

    async def connect() -> None:
        async with gate:
            with contextlib.suppress(OSError):
                streams.append(await open_stream(host, port, path, window, cfg.get("body")))

    connecting = now()
    await asyncio.gather(*(connect() for _ in range(count)))
    connect_s = now() - connecting
    await asyncio.sleep(0.5)  # every connection accepted before the burst
    closed = [s for s in streams if s.transport is None or s.transport.is_closing()]
    streams = [s for s in streams if s not in closed]
    sent = now()
    for stream in streams:
        stream.send()
    deadline = sent + cfg.get("timeout_s", 60)
    while now() < deadline and sum(1 for s in streams if s.first or s.done.done()) < len(streams):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    firsts = sorted(s.first - sent for s in streams if s.first)
    for stream in streams:
        stream.close()
    return {
        "count": count,
        "connected": len(streams),
        "closed_before_send": len(closed),
        "connect_s": connect_s,
        "started": len(firsts),
        "failed": sum(1 for s in streams if s.status not in (0, 200)),
        "ttft_p50_ms": firsts[len(firsts) // 2] * 1000 if firsts else None,
        "ttft_p90_ms": firsts[int(len(firsts) * 0.9)] * 1000 if firsts else None,
        "starts_per_s": len(firsts) / firsts[-1] if firsts else None,
    }


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    raise_fd_limit()
    import uvloop

    mode = {"load": load, "single": single, "ttft": ttft, "warm": warm, "burst": burst}[cfg["mode"]]
    result = uvloop.run(mode(cfg))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
