"""The seed's recipe over a real upstream: FastAPI ``StreamingResponse`` over the OpenAI SDK's stream.

``GET /stream?model=M&base_url=U`` streams ``chat.completions.create(stream=True)`` from ``U`` as ``data: {json}``
frames, then ``{"done": true}`` — what the seed did, with the SDK's defaults (one client per upstream, as an app
keeps it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from openai import AsyncOpenAI

app = FastAPI()
_clients: dict[str, AsyncOpenAI] = {}


@app.get("/stream")
async def stream(model: str, base_url: str) -> StreamingResponse:
    client = _clients.get(base_url)
    if client is None:
        client = _clients[base_url] = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    response = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )

    async def generate() -> AsyncIterator[str]:
        async with response:
            async for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield f"data: {json.dumps({'delta': chunk.choices[0].delta.content})}\n\n"
        yield f"data: {json.dumps({'done': True})}\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")
