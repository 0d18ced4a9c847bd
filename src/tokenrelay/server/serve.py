"""Running the app under uvicorn, as ``tokenrelay serve`` does: connection limits, a graceful SIGTERM, clean logs.

- The connection limits (request head size, header count, head timeout, keep-alive, connection cap) are passed to
  uvicorn and its HTTP protocol (see :mod:`~tokenrelay.server.edge`); the body's limits are the application's.
- SIGTERM (or Ctrl-C) stops accepting connections, gives running runs ``shutdown_grace_s`` seconds to finish, then
  ends each remaining one with a retryable ``shutdown`` error and its done frame (saving its partial answer), and
  only then lets uvicorn close the connections — which it does before the application's lifespan ends, too late
  for the runs to say goodbye. The process exits with status 0.
- ``serve --workers N`` runs N such servers, one per process, on one port: see :mod:`~tokenrelay.server.workers`.
- ``?access_token=`` is redacted from the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from tokenrelay.observability.logs import uvicorn_log_config
from tokenrelay.server.edge import ConnectionLimits, http_protocol
from tokenrelay.server.relay import Relay
from tokenrelay.server.settings import Settings

__all__ = ["GracefulServer", "RedactTokens", "build_server", "redact", "serve"]

log = logging.getLogger("tokenrelay.server")

# After the runs have ended, how long their last frames (and any other response) get to reach the clients.
FLUSH_S = 5.0

_TOKEN_IN_QUERY = re.compile(r"(?i)((?:^|[?&])access_token=)[^&\s\"]*")


def redact(text: str) -> str:
    """``text`` (a path with its query) with the value of every ``access_token`` parameter replaced."""
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """A log filter that keeps ``?access_token=`` values out of uvicorn's access log (and any log it is put on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "access_token" in a for a in record.args):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and "access_token" in record.msg:
            record.msg = redact(record.msg)
        return True


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose shutdown first lets the relay's runs end, and reach their viewers, cleanly."""

    def __init__(
        self,
        config: uvicorn.Config,
        relay: Relay,
        *,
        grace_s: float,
        worker: bool = False,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.relay = relay
        self.grace_s = grace_s
        # One of `serve --workers N`'s processes: its parent forwards SIGTERM (the second one gives up the grace,
        # as a second Ctrl-C does) and handles Ctrl-C itself.
        self.worker = worker
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.worker and sig == signal.SIGTERM:
            sig = signal.SIGINT
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting, and let no kept-alive connection start anything new, before the runs are given their grace.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        runs = self.relay.runs.active_runs
        if runs:
            log.info("Shutting down: %d run(s) have %.3g s to finish", runs, self.grace_s)
        await self._end_runs()
        await super().shutdown(sockets)

    async def _end_runs(self) -> None:
        ending = asyncio.create_task(self.relay.runs.shutdown(self.grace_s))
        # A second Ctrl-C (force_exit) gives up on the grace at once.
        while not ending.done() and not self.force_exit:
            await asyncio.wait({ending}, timeout=0.1)
        if not ending.done():
            ending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ending

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal it caught once it has shut down, so a SIGTERM would still kill the process
        # (exit status 143) after a clean shutdown. Shutting down is the whole answer to the signal: status 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGTERM,) if self.worker else (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        if self.worker:
            original[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def build_server(
    app: Any,
    relay: Relay,
    settings: Settings,
    *,
    worker: bool = False,
    on_started: Callable[[], None] | None = None,
    **config: Any,
) -> GracefulServer:
    """A :class:`GracefulServer` for ``app`` with the settings' limits; ``config`` overrides uvicorn options.

    ``worker`` and ``on_started`` are for the processes of ``serve --workers N`` (see
    :mod:`~tokenrelay.server.workers`): their signals, and a call once the server accepts connections.
    """
    limits = ConnectionLimits(
        max_head_bytes=settings.max_head_bytes,
        max_headers=settings.max_headers,
        head_timeout_s=settings.head_timeout_s,
        max_connections=settings.max_connections,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": uvicorn_log_config(settings.log_format, settings.log_level),  # --log-format
        "http": http_protocol(limits),
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": FLUSH_S,
        **config,
    }
    server = GracefulServer(
        uvicorn.Config(app, **options),
        relay,
        grace_s=settings.shutdown_grace_s,
        worker=worker,
        on_started=on_started,
    )
    # uvicorn configures its loggers as its Config is made: the filter goes on after that.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    return server


def serve(app: Any, relay: Relay, settings: Settings) -> None:
    """Run ``app`` (serving ``relay``) until SIGTERM or Ctrl-C, then shut down gracefully."""
    server = build_server(app, relay, settings)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
