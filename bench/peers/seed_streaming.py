"""The seed's recipe: FastAPI ``StreamingResponse`` over a generator of ``data: {json}`` strings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from bench.peers._tokens import tokens

app = FastAPI()


@app.get("/stream")
async def stream(n: int = 500, interval_ms: float = 20, token: str = "~", delay_ms: float = 0) -> StreamingResponse:
    async def generate() -> AsyncIterator[str]:
        async for delta in tokens(n, interval_ms / 1000, token, delay_ms / 1000):
            yield f"data: {json.dumps({'delta': delta})}\n\n"
        yield f"data: {json.dumps({'done': True})}\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")
