"""A redis-server of a test's own on a free port (never the shared one), which the test may pause, kill and start
again empty, by its pid."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess

from tests.conftest import free_port

__all__ = ["RedisProcess"]


class RedisProcess:
    """``redis-server --port N --save "" --appendonly no``: it keeps nothing, so a restart starts empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self, timeout: float = 10.0) -> None:
        """Until it answers PING (it was just started)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await asyncio.to_thread(self._answers):
            if loop.time() > deadline:
                raise AssertionError(f"redis-server on {self.port} did not start in {timeout}s")
            await asyncio.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self._process is not None, "not running"
        return self._process.pid

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as a stalled server does."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (resumed first, should it be paused), and wait for the process to be gone."""
        if self._process is None:
            return
        os.kill(self._process.pid, signal.SIGCONT)
        self._process.kill()
        self._process.wait()
        self._process = None

    async def restart_empty(self) -> None:
        """Killed and started again on the same port, with nothing in it."""
        self.kill()
        self.start()
        await self.ready()
