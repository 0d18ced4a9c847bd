"""Real processes for the fault tests: ``python -m tokenrelay serve`` instances stopped by their pid, and reading
their streams (a database is cut with ``tests/proxy.py``'s proxy in front of it; the database itself, shared by
every test, is never touched)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tokenrelay.sse import ServerSentEvent, SSEDecoder

Payload = dict[str, Any]


class ServeProcess:
    """One ``tokenrelay serve`` subprocess on a free port, its stderr kept in a file for the assertions."""

    def __init__(self, log: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "tokenrelay", "serve", "--port", str(self.port), *flags]
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **(env or {})}
            )

    async def ready(self, client: httpx.AsyncClient, timeout: float = 60.0) -> None:
        """Until /api/health answers 200 (each check is a request answered or refused: no fixed pause)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            assert self.process.poll() is None, self.stderr()
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{self.url}/api/health", timeout=1)).status_code == 200:
                    return
            assert loop.time() < deadline, f"the server on {self.port} did not start in {timeout}s"
            await asyncio.sleep(0.05)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 15.0) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL if still running (the end of a test, whatever happened)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@asynccontextmanager
async def serve_processes(
    tmp_path: Path, client: httpx.AsyncClient, count: int, *flags: str, env: dict[str, str] | None = None
) -> AsyncIterator[list[ServeProcess]]:
    """``count`` instances with the same flags, all answering before the block starts; each killed after it."""
    procs = [ServeProcess(tmp_path / f"instance-{n}.log", *flags, env=env) for n in range(count)]
    try:
        for proc in procs:
            await proc.ready(client)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


async def read_payloads(
    response: httpx.Response, on_delta: Callable[[int], None] | None = None, *, cut_ok: bool = False
) -> list[Payload]:
    """Every frame's JSON with its event id under ``"id"``; ``on_delta(n)`` after the n-th text delta. With
    ``cut_ok`` a connection that breaks (its server killed) ends the list instead of failing."""
    assert response.status_code == 200, response.status_code
    decoder, out, deltas = SSEDecoder(), [], 0
    try:
        async with asyncio.timeout(30):
            async for chunk in response.aiter_raw():
                for frame in decoder.feed(chunk):
                    if not isinstance(frame, ServerSentEvent):
                        continue
                    out.append({**json.loads(frame.data), "id": frame.id})
                    if "delta" in out[-1]:
                        deltas += 1
                        if on_delta is not None:
                            on_delta(deltas)
    except httpx.TransportError:
        if not cut_ok:
            raise
    return out


def text(frames: list[Payload]) -> str:
    return "".join(str(f["delta"]) for f in frames if "delta" in f)
