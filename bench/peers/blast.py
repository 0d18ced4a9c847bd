"""Not a peer: the load client's own ceiling. Pre-encoded frames, 64 KB per send, as fast as the socket takes them.

If the client counts far more tokens per second from this than from the bare loop, the client is not what limits
the bare loop's number.
"""

from __future__ import annotations

import asyncio
from typing import Any

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
CHUNK = b'data: {"delta": "~"}\n\n' * 3000


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    left = False

    async def listen() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True

    listener = asyncio.ensure_future(listen())
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    while not left:
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await asyncio.sleep(0)
    listener.cancel()
