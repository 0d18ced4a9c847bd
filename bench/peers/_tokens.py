"""The token source every peer uses: the synthetic backend's schedule, so all servers are asked the same thing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qs


async def tokens(n: int, interval_s: float, token: str, delay_s: float = 0.0) -> AsyncIterator[str]:
    """``n`` tokens, one every ``interval_s`` on an absolute schedule (as ``SyntheticBackend`` does).

    With ``interval_s == 0`` it goes as fast as it can but yields to the event loop between tokens, as a real
    upstream does (a socket read, a model thread's queue): a loop that never yields cannot even notice that its
    client has gone. ``delay_s`` is silence before the first token (the synthetic backend's initial delay).
    """
    if delay_s:
        await asyncio.sleep(delay_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        if i:
            if interval_s:
                delay = start + i * interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        yield token


def params(query_string: bytes) -> tuple[int, float, str, float]:
    """``n``, ``interval_s``, ``token`` and ``delay_s`` from ``?n=&interval_ms=&token=&delay_ms=``."""
    q = parse_qs(query_string.decode("latin-1"))
    n = int(q.get("n", ["500"])[0])
    interval_s = float(q.get("interval_ms", ["20"])[0]) / 1000
    token = q.get("token", ["~"])[0]
    delay_s = float(q.get("delay_ms", ["0"])[0]) / 1000
    return n, interval_s, token, delay_s
