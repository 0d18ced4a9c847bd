"""What the Redis store's tests share: waiting on a condition that takes a round trip to check, and a raw client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from tests.conftest import REDIS_URL

if TYPE_CHECKING:
    import redis.asyncio as aioredis


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Wait until ``await check()`` is true, checking every 10 ms (each check is a round trip); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def raw_redis() -> AsyncIterator[aioredis.Redis]:
    """A plain client of the test Redis, to look at the keys a store wrote."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()
