from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@asynccontextmanager
async def running_server(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` with real uvicorn on a free port, in this event loop; yields the base URL."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve())
    await wait_for_async(lambda: server.started or task.done(), timeout=15, what="uvicorn to start")
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def wait_for_async(predicate: Callable[[], Any], *, timeout: float, what: str) -> None:
    """Wait until ``predicate()`` is true, checking at every turn of a short timer; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
