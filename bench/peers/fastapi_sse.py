"""FastAPI's built-in ``EventSourceResponse``: a path operation that yields objects, encoded by FastAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.sse import EventSourceResponse

from bench.peers._tokens import tokens

app = FastAPI()


@app.get("/stream", response_class=EventSourceResponse)
async def stream(
    n: int = 500, interval_ms: float = 20, token: str = "~", delay_ms: float = 0
) -> AsyncIterator[dict[str, Any]]:
    async for delta in tokens(n, interval_ms / 1000, token, delay_ms / 1000):
        yield {"delta": delta}
    yield {"done": True}
