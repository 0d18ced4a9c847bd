"""sse-starlette's ``EventSourceResponse`` over a generator of ``{"data": json}`` dicts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sse_starlette import EventSourceResponse

from bench.peers._tokens import tokens

app = FastAPI()


@app.get("/stream")
async def stream(n: int = 500, interval_ms: float = 20, token: str = "~", delay_ms: float = 0) -> EventSourceResponse:
    async def generate() -> AsyncIterator[dict[str, str]]:
        async for delta in tokens(n, interval_ms / 1000, token, delay_ms / 1000):
            yield {"data": json.dumps({"delta": delta})}
        yield {"data": json.dumps({"done": True})}

    return EventSourceResponse(generate())
