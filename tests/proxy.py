"""A TCP proxy that can cut connections: what a phone switching networks or a proxy's idle timeout does to a stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut_next(n)`` makes the next connections drop after ``n`` bytes
    from the server (headers included), abruptly, as a network does.

    With ``also``, connections go round-robin to the targets, as behind a load balancer: connection 1 to the first,
    connection 2 to the next...
    """

    def __init__(self, target_host: str, target_port: int, *, also: list[tuple[str, int]] | None = None) -> None:
        self.targets = [(target_host, target_port), *(also or [])]
        self._cuts: list[int] = []
        self.connections = 0
        self.cut = 0
        self.refused = 0
        self.partitioned = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    def cut_next(self, after_bytes: int, times: int = 1) -> None:
        self._cuts.extend([after_bytes] * times)

    def drop_all(self) -> int:
        """Cut every open connection at once, abruptly; returns how many there were."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()  # no orderly end: what a cut network gives
        self._writers.clear()
        return len(writers) // 2  # both sides of each connection

    def partition(self) -> None:
        """A network partition (or a server restarting): cut every open connection and refuse new ones."""
        self.partitioned = True
        self.drop_all()

    def heal(self) -> None:
        self.partitioned = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        if this is not None:
            self._handlers.add(this)
            this.add_done_callback(self._handlers.discard)
        if self.partitioned:
            self.refused += 1
            writer.transport.abort()
            return
        target = self.targets[self.connections % len(self.targets)]
        self.connections += 1
        limit = self._cuts.pop(0) if self._cuts else None
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counted: bool) -> None:
            sent = 0
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if counted and limit is not None and sent + len(data) > limit:
                        dst.write(data[: limit - sent])
                        await dst.drain()
                        self.cut += 1
                        break
                    sent += len(data)
                    dst.write(data)
                    await dst.drain()

        tasks = [
            asyncio.create_task(pump(reader, up_writer, False)),
            asyncio.create_task(pump(up_reader, writer, True)),
        ]
        for task in tasks:
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            # Abort rather than close: a cut network sends no orderly end.
            w.transport.abort()
            self._writers.discard(w)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            self.drop_all()
            # Every connection's tasks end here, not when a later test's garbage collection finds them pending: the
            # pumps are cancelled, and each connection's handler then ends by itself (cancelling it would make
            # asyncio's own callback complain).
            for task in list(self._pumps):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*self._handlers, *self._pumps, return_exceptions=True)
            await server.wait_closed()
