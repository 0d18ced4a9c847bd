"""``tokenrelay serve --workers N``: N processes on one port, each a full tokenrelay instance.

Each worker is a forked process with its own event loop, backend, relay, store connection and instance id; they
share nothing but the run store (Redis) and the history database, which is why more than one worker needs both to
be shared (:func:`refusal`). Any worker serves any run's stream, resume and cancel, as separate instances do.

- **The port.** The parent binds the address once with ``SO_REUSEPORT`` and never listens on it: that reserves the
  port (a port in use fails at start, ``--port 0`` picks one) while the kernel spreads connections only over the
  workers' own listening sockets, bound to the same address. A worker takes connections once it is ready (its
  store and history answer), and a worker that dies leaves the group at once; the others keep accepting.
- **Start.** Worker 0 starts first (it applies the history's migrations); the others once it is ready. A worker
  that fails at start (a model file missing, a database out of reach) prints why and exits, and the parent exits 1.
- **A worker that dies** is logged and started again (after a short pause if it had not lived long). When
  :data:`MAX_START_FAILURES` starts in a row die before being ready, the parent gives up: it stops the others and
  exits 1.
- **Signals.** SIGTERM or SIGINT to the parent is forwarded to the workers as SIGTERM, and each one shuts down
  gracefully (``--shutdown-grace-s`` for its runs, then their last frames). A second one gives up the grace. Workers
  ignore SIGINT themselves, so a Ctrl-C that reaches the whole process group counts once. The parent exits 0 when
  every worker ended cleanly, 1 otherwise; a worker still there ``grace + flush + 5 s`` after the signal is killed.
  On Linux a worker whose parent is gone (SIGKILL) gets SIGTERM from the kernel and shuts down.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tokenrelay.errors import ConfigError
from tokenrelay.server.serve import FLUSH_S, build_server
from tokenrelay.server.settings import Settings

__all__ = ["MAX_START_FAILURES", "Supervisor", "bind", "refusal", "serve_workers"]

MAX_START_FAILURES = 3
# A worker that dies sooner than this after its start waits before it is started again.
_SHORT_LIFE_S = 10.0
_RESTART_PAUSE_S = 1.0
_STOP_MARGIN_S = 5.0
_PR_SET_PDEATHSIG = 1
_READY = struct.Struct("=i")
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)

# What a worker runs: given its index and the function to call once it serves, its exit status.
WorkerTarget = Callable[[int, Callable[[], None]], int]


def refusal(settings: Settings) -> str | None:
    """Why ``settings`` cannot run with its ``workers`` (one line), or None when they can."""
    n = settings.workers
    if n == 1:
        return None
    if settings.store != "redis":
        return (
            f"--workers {n} needs a shared run store (--store redis): with the memory store each worker sees only "
            "its own runs, so a resume or a cancel that reaches another worker would fail"
        )
    if settings.history == "memory":
        return (
            f"--workers {n} needs a shared history (--history sql): with --history memory each worker keeps its "
            "own conversations"
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        return f"--workers {n} needs SO_REUSEPORT, which this platform does not have"
    return None


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``), not yet listening."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


@dataclass
class _Worker:
    index: int
    pid: int
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False


class Supervisor:
    """Runs ``count`` workers (``target`` in a forked process each) until a signal, restarting those that die.

    :meth:`run` is the parent's whole life: it returns the exit status. It must run in the main thread of a process
    without other threads (it forks).
    """

    def __init__(
        self,
        count: int,
        target: WorkerTarget,
        *,
        stop_timeout_s: float,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.count = count
        self.target = target
        self.stop_timeout_s = stop_timeout_s
        self.say = say or _print
        self.workers: dict[int, _Worker] = {}  # by pid
        self.restarts: dict[int, float] = {}  # worker index -> when to start it again
        self.start_failures = 0
        self.ever_ready = False
        self.stopping_at: float | None = None
        self.status = 0
        self._signals: list[int] = []

    def run(self) -> int:
        self._parent = os.getpid()
        ready_r, self._ready_w = os.pipe()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(ready_r, False)
        with self._selector(ready_r, wake_r) as selector, self._handling_signals(wake_w):
            self._fds = (ready_r, wake_r, wake_w)
            self._spawn(0)
            while self.workers or self.restarts:
                for key, _ in selector.select(self._timeout()):
                    self._read(key.fd)
                self._step()
        for fd in (ready_r, self._ready_w, wake_r, wake_w):
            os.close(fd)
        return self.status

    def _step(self) -> None:
        """What the last wake-up brought: signals, exited workers, restarts that are due, a shutdown overdue."""
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(f"{signal.Signals(sig).name}: stopping {len(self.workers)} worker(s)")
        self._reap()
        now = time.monotonic()
        for index, when in list(self.restarts.items()):
            if when <= now:
                del self.restarts[index]
                self._spawn(index)
        if self.stopping_at is not None and now - self.stopping_at > self.stop_timeout_s and self.workers:
            self.say(f"{len(self.workers)} worker(s) still running {self.stop_timeout_s:g} s after the signal: killed")
            self.status = 1
            for pid in self.workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.stopping_at = now  # give the kills their own turn

    def _timeout(self) -> float:
        deadlines = list(self.restarts.values())
        if self.stopping_at is not None:
            deadlines.append(self.stopping_at + self.stop_timeout_s + 0.01)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def _read(self, fd: int) -> None:
        data = b""
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 4096)
        if fd != self._fds[0]:
            return  # the signal wake-up byte: the handler already noted the signal
        for (pid,) in _READY.iter_unpack(data[: len(data) - len(data) % _READY.size]):
            worker = self.workers.get(pid)
            if worker is not None:
                self._ready(worker)

    def _ready(self, worker: _Worker) -> None:
        worker.ready = True
        self.start_failures = 0
        self.say(f"worker {worker.index} (pid {worker.pid}) is serving")
        if not self.ever_ready:
            self.ever_ready = True
            if self.stopping_at is not None:
                return  # a signal came while worker 0 was starting: the others are not started at all
            for index in range(1, self.count):
                self._spawn(index)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int) -> None:
        what = f"worker {worker.index} (pid {worker.pid}) {_describe(code)}"
        if self.stopping_at is not None:
            # Killed by the SIGTERM sent to it: a worker still starting, which had no runs yet.
            if code not in (0, -signal.SIGTERM):
                self.status = 1
                self.say(what)
            return
        if not worker.ready:
            what += " before it was ready"
            self.start_failures += 1
            if not self.ever_ready:
                self._give_up(f"{what}: not starting")
                return
            if self.start_failures >= MAX_START_FAILURES:
                self._give_up(f"{what}, {self.start_failures} starts in a row: giving up")
                return
        lived = time.monotonic() - worker.started_at
        pause = 0.0 if worker.ready and lived >= _SHORT_LIFE_S else _RESTART_PAUSE_S
        self.say(f"{what}; starting it again" + (f" in {pause:g} s" if pause else ""))
        self.restarts[worker.index] = time.monotonic() + pause

    def _give_up(self, why: str) -> None:
        self.status = 1
        self._stop(why)

    def _stop(self, why: str) -> None:
        """Forward SIGTERM to every worker: a graceful shutdown the first time, giving up the grace the next."""
        if self.stopping_at is None:
            self.say(why)
            self.stopping_at = time.monotonic()
            self.restarts.clear()
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self, index: int) -> None:
        sys.stderr.flush()
        # Blocked across the fork, so that the worker cannot get a signal before it has its own handling of them.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
            if pid == 0:
                self._child(index)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        self.workers[pid] = _Worker(index, pid)

    def _child(self, index: int) -> None:
        code = 1
        try:
            _as_worker(self._parent, self._fds)
            ready_w = self._ready_w
            code = self.target(index, lambda: _notify(ready_w))
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    @contextlib.contextmanager
    def _handling_signals(self, wake_w: int) -> Iterator[None]:
        original = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        previous_fd = signal.set_wakeup_fd(wake_w)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: Any) -> None:
        self._signals.append(sig)

    @staticmethod
    @contextlib.contextmanager
    def _selector(*fds: int) -> Iterator[selectors.BaseSelector]:
        selector = selectors.DefaultSelector()
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        try:
            yield selector
        finally:
            selector.close()


def _as_worker(parent: int, parent_fds: tuple[int, ...]) -> None:
    """A forked worker's first steps: the parent's signal handling undone, and its death made the worker's end."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's to handle: it forwards SIGTERM
    for fd in parent_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
    if os.getppid() != parent:
        raise SystemExit(1)  # the parent died before the request above took effect


def _print(message: str) -> None:
    print(f"tokenrelay: {message}", file=sys.stderr, flush=True)


def _logger() -> Callable[[str], None]:
    log = logging.getLogger("tokenrelay.workers")
    return log.info


def _notify(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, _READY.pack(os.getpid()))


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


def serve_workers(settings: Settings, build_app: Callable[[], Any]) -> int:
    """Serve ``settings.workers`` workers on the settings' address, each running ``build_app()``; the exit status.

    ``build_app`` runs in each worker (after the fork): it builds and loads the backend and returns the app, whose
    ``state.relay`` is served. It may raise ``SystemExit`` with a message already printed.
    """
    try:
        reservation = bind(settings.host, settings.port)
    except OSError as exc:
        raise ConfigError(f"--port: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
    port = int(reservation.getsockname()[1])

    def worker(index: int, ready: Callable[[], None]) -> int:
        reservation.close()
        sock = bind(settings.host, port)
        app = build_app()
        server = build_server(app, app.state.relay, settings, worker=True, on_started=ready)
        server.run(sockets=[sock])
        return 0 if server.started else 3

    stop_timeout_s = settings.shutdown_grace_s + FLUSH_S + _STOP_MARGIN_S
    say = _logger() if settings.log_format == "json" else None
    supervisor = Supervisor(settings.workers, worker, stop_timeout_s=stop_timeout_s, say=say)
    supervisor.say(f"{settings.backend} backend on http://{settings.host}:{port}, {settings.workers} workers")
    try:
        return supervisor.run()
    finally:
        reservation.close()
