"""Starting the servers under test and the load client, each pinned to its own core."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKEN = "~"
CORES = os.cpu_count() or 1
SERVER_CPU = {0}
CLIENT_CPU = {1 % CORES}
UVICORN = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    module: str | None  # a bench.peers app for uvicorn; None for tokenrelay itself

    def command(
        self, port: int, *, tokens: int, interval_ms: float, delay_ms: float = 0, extra: tuple[str, ...] = ()
    ) -> list[str]:
        if self.module is None:
            return [
                sys.executable,
                *("-m", "tokenrelay", "serve", "--backend", "synthetic"),
                *("--host", HOST, "--port", str(port), "--log-level", "warning"),
                *("--synthetic-token", TOKEN, "--synthetic-tokens", str(tokens)),
                *("--synthetic-interval-ms", str(interval_ms), "--synthetic-initial-delay-ms", str(delay_ms)),
                *("--max-active-runs", "100000"),
                # The streaming path is what is measured here; the SQL history's cost is measured apart (TTFT).
                *("--history", "memory"),
                *extra,
            ]
        return [sys.executable, "-m", "uvicorn", self.module, "--host", HOST, "--port", str(port), *UVICORN]

    def path(self, *, tokens: int, interval_ms: float, delay_ms: float = 0) -> str:
        if self.module is None:
            return "/api/chat/stream?message=hi"
        return f"/stream?n={tokens}&interval_ms={interval_ms}&token={TOKEN}&delay_ms={delay_ms}"


PEERS = {
    p.name: p
    for p in (
        Peer("bare", "bare ASGI loop", "bench.peers.bare:app"),
        Peer("tokenrelay", "tokenrelay", None),
        Peer("seed", "seed StreamingResponse", "bench.peers.seed_streaming:app"),
        Peer("sse-starlette", "sse-starlette", "bench.peers.sse_starlette_peer:app"),
        Peer("fastapi-sse", "FastAPI EventSourceResponse", "bench.peers.fastapi_sse:app"),
    )
}
BLAST = Peer("blast", "client ceiling (pre-encoded 64 KB writes)", "bench.peers.blast:app")


def _limits(cpus: set[int] | None) -> Callable[[], None]:
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    return apply


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_share(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU use between two wall-clock times (1.0 = one core busy), from (wall clock, CPU seconds) samples."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0) if t1 > t0 else None


class CpuSampler:
    """A process's CPU use over wall-clock spans (1.0 = one core busy), sampled every 50 ms; with ``children``, that
    of its children at the time it is made too (workers under their parent)."""

    def __init__(self, pid: int, *, children: bool = False) -> None:
        path = Path(f"/proc/{pid}/task/{pid}/children")
        kids = [int(p) for p in path.read_text().split()] if children and path.exists() else []
        self.pids = [pid, *kids]
        self.samples: list[tuple[float, float]] = []
        self._running = False

    def _ticks(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_ticks(pid)
        return total

    @contextlib.contextmanager
    def running(self) -> Iterator[CpuSampler]:
        tick = os.sysconf("SC_CLK_TCK")

        def sample() -> None:
            while self._running:
                self.samples.append((time.time(), self._ticks() / tick))
                time.sleep(0.05)

        self._running = True
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._running = False
            thread.join()

    def share(self, start: float, end: float) -> float | None:
        return cpu_share(self.samples, start, end)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port (keeping nothing), stopped by its pid afterwards."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not start")
            time.sleep(0.02)
        yield f"redis://{HOST}:{port}/0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Server:
    """One server process: started, warmed up, sampled for RSS, stopped."""

    def __init__(
        self,
        peer: Peer,
        *,
        tokens: int,
        interval_ms: float,
        delay_ms: float = 0,
        extra: tuple[str, ...] = (),
        cpus: set[int] | None = SERVER_CPU,
        ready_timeout: float = 60,
    ) -> None:
        self.peer = peer
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.path = peer.path(tokens=tokens, interval_ms=interval_ms, delay_ms=delay_ms)
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.proc = subprocess.Popen(
            peer.command(self.port, tokens=tokens, interval_ms=interval_ms, delay_ms=delay_ms, extra=extra),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_limits(cpus),
        )
        self._peak = 0
        self._sampling = False
        self._sampler: threading.Thread | None = None

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"{self.peer.name} exited: {err[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.peer.name} did not start in {timeout}s")

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    @contextlib.contextmanager
    def sampled(self) -> Iterator[Callable[[], int]]:
        """Sample RSS and CPU time every 50 ms while the block runs; yields a function returning the peak RSS (KB)."""
        self._peak = self.rss_kb()
        self._sampling = True
        self.cpu_samples: list[tuple[float, float]] = []  # (wall clock, CPU seconds)
        tick = os.sysconf("SC_CLK_TCK")

        def sample() -> None:
            while self._sampling:
                with contextlib.suppress(OSError):
                    self._peak = max(self._peak, self.rss_kb())
                    self.cpu_samples.append((time.time(), cpu_ticks(self.proc.pid) / tick))
                time.sleep(0.05)

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()
        try:
            yield lambda: self._peak
        finally:
            self._sampling = False
            self._sampler.join()

    def cpu_share(self, start: float, end: float) -> float | None:
        """The server's CPU use between two wall-clock times (1.0 = one core busy), from the samples."""
        return cpu_share(self.cpu_samples, start, end)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_client(cfg: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run the load client in its own process, pinned to the other core; its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.client", json.dumps(cfg)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
        capture_output=True,
        timeout=timeout,
        preexec_fn=_limits(CLIENT_CPU),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {proc.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
