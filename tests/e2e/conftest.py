"""Fixtures for the browser tests: the real server as a subprocess, and Debian's Chromium driven by Playwright.

The browser is never downloaded: Playwright's Python package drives /usr/bin/chromium (``make browser`` installs
it). Without it, or without the built chat page, these tests fail under CI=true and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = Path(os.environ.get("TOKENRELAY_CHROMIUM", "/usr/bin/chromium"))
STATIC_INDEX = Path(__file__).resolve().parents[2] / "src" / "tokenrelay" / "server" / "static" / "index.html"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


class Server:
    """A ``python -m tokenrelay serve`` subprocess on a free port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "tokenrelay", "serve", "--backend", "synthetic", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--log-level", "warning", *args],
            # Its own directory: the default SQLite history (tokenrelay.db in the current directory) is this test's.
            cwd=log_path.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = get_json(f"{self.url}/api/health")
        return result

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.health().get("status") == "ok"
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(self._ready, timeout=timeout, what=f"the server at {self.url} to answer /api/health")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve("--synthetic-tokens", "10", ...)`` starts a server with those flags and waits until it is ready."""
    servers: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(list(args), tmp_path / f"server-{len(servers)}" / "server.log")
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


# Module scope, not session: while sync_playwright() is open it keeps an event loop running in this thread, and
# pytest-asyncio cannot run async tests from other modules until it has exited.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: install Debian's chromium (make browser)")
    if not STATIC_INDEX.exists():
        _unavailable(f"{STATIC_INDEX} is missing: build the chat page (cd web && npm ci && npm run build)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; fails the test if the page logged an uncaught error."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


class DroppingProxy:
    """``tests/proxy.py``'s CuttingProxy in a thread of its own, for the synchronous browser tests, with ``drop()``:
    every connection through it is cut at once, abruptly, as when a laptop leaves its Wi-Fi."""

    def __init__(self, target: Server) -> None:
        from tests.proxy import CuttingProxy

        self.proxy = CuttingProxy("127.0.0.1", target.port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="dropping-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.proxy.serve() as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def drop(self) -> int:
        """Cut every open connection; returns how many were cut."""

        async def cut() -> int:
            return self.proxy.drop_all()

        return asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def dropping_proxy() -> Iterator[Callable[[Server], DroppingProxy]]:
    proxies: list[DroppingProxy] = []

    def start(target: Server) -> DroppingProxy:
        proxy = DroppingProxy(target)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
