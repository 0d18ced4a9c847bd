"""One small wait primitive, for what is held by the thousand: a run's end, a connection's writable state."""

from __future__ import annotations

import asyncio

__all__ = ["Latch"]


class Latch:
    """``asyncio.Event``'s ``set`` / ``clear`` / ``is_set`` / ``wait``, with nothing allocated until somebody waits.

    Every run has one for its end, and uvicorn's connections and requests under ``tokenrelay serve`` one each for
    their flow control and their messages (the edge puts them in place of uvicorn's events); few are waited on, by
    one task at a time. An ``asyncio.Event`` makes a deque at once, which allocates a block of 64 slots (~700 B).
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
