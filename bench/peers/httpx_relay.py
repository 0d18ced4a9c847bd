"""The floor for a real upstream: a plain FastAPI relay that reads the upstream with httpx and ``json``, no SDK.

``GET /stream?model=M&base_url=U`` posts a streaming Chat Completions request to ``U``, decodes each ``data:`` line
with ``json.loads`` and sends its text on as ``data: {json}`` frames, then ``{"done": true}``. Nothing more: no run
that outlives the connection, no history, no error mapping — what tokenrelay must beat while doing all of that.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()
# No pool limit: each stream holds its upstream connection for as long as it lasts.
_client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000))


@app.get("/stream")
async def stream(model: str, base_url: str) -> StreamingResponse:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    request = _client.build_request("POST", f"{base_url}/chat/completions", json=body)
    response = await _client.send(request, stream=True)
    response.raise_for_status()

    async def generate() -> AsyncIterator[str]:
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or ()
                text = choices[0].get("delta", {}).get("content") if choices else None
                if text:
                    yield f"data: {json.dumps({'delta': text})}\n\n"
        finally:
            await response.aclose()
        yield f"data: {json.dumps({'done': True})}\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")
