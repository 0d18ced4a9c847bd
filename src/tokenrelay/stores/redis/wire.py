"""A connection held by one of the store's busy loops (the flusher, a tail reader), with commands packed here.

redis-py spends Python per command and per argument: the pool's lock and bookkeeping to take and give back a
connection, and an encoding step, a length and a buffer join per argument. The store's two hot commands, the
writer's batch and a tail reader's ``XREAD``, are sent once per batch with many arguments, by one task each: that
task keeps one connection of the client's pool for itself and packs the command in one pass (:func:`pack`). Replies
are redis-py's own (hiredis when installed), without the per-command reply callbacks: raw lists.

One Redis server only; on a Redis Cluster the store goes through the cluster client, which routes each slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = ["Line", "pack"]


def pack(args: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol (RESP): an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


class Line:
    """One connection of ``client``'s pool, held from the first call to :meth:`close` by the one task that calls.

    A call that fails other than by Redis's own error reply (the connection dropped, it timed out, the caller was
    cancelled while waiting) disconnects it: a reply still on its way must not be taken for the next call's. The
    next call connects again.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: AbstractConnection | None = None

    async def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (within the client's socket timeout); Redis's error reply is
        raised (``ResponseError``)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()
        except ResponseError:
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise

    async def close(self) -> None:
        """Give the connection back to the pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
