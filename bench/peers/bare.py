"""The floor: a bare ASGI app that sends one SSE event per delta, with nothing between the token and ``send``.

It still does what any correct streaming response must: JSON-encode each delta and stop when the client leaves.
"""

from __future__ import annotations

import asyncio
from json.encoder import encode_basestring_ascii
from typing import Any

from bench.peers._tokens import params

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    n, interval_s, token, delay_s = params(scope["query_string"])
    left = False

    async def listen() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True

    listener = asyncio.ensure_future(listen())
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    if delay_s:
        await asyncio.sleep(delay_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        if left:
            return
        if i:  # the schedule of bench.peers._tokens.tokens, inlined
            if interval_s:
                delay = start + i * interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        frame = b'data: {"delta": %s}\n\n' % encode_basestring_ascii(token).encode()
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b'data: {"done": true}\n\n', "more_body": False})
    listener.cancel()
