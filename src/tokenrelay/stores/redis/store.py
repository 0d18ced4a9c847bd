"""The Redis run store itself: the :class:`~tokenrelay.stores.base.RunStore` face over the package's parts.

It keeps this instance's copies of runs (``RunLog``), serves reads from them, loads a run from Redis on first use
and hands the rest out: appends to the writer, runs driven elsewhere to the tail readers, requests between instances
to the inbox, the instance's mark and the check of others' to liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tokenrelay.coalescing import coalesce
from tokenrelay.errors import StoreUnavailable
from tokenrelay.events import Event, StoredEvent, ToolApprovalResponse
from tokenrelay.stores.base import DecisionResult, RunInfo, StoreListener, Suspension
from tokenrelay.stores.redis.approvals import Approvals
from tokenrelay.stores.redis.background import stop
from tokenrelay.stores.redis.chat_runs import RedisChatRunIndex
from tokenrelay.stores.redis.cluster import UNREACHABLE, Client, check_prefix, connect
from tokenrelay.stores.redis.inbox import Inbox
from tokenrelay.stores.redis.layout import Keys, decode, entry_event, info_from_meta, meta_of
from tokenrelay.stores.redis.liveness import Liveness
from tokenrelay.stores.redis.logs import RunLog
from tokenrelay.stores.redis.scripts import VIEWERS
from tokenrelay.stores.redis.tails import Tails
from tokenrelay.stores.redis.writer import Writer

__all__ = ["RedisRunStore"]

_DRAIN_S = 2.0  # how long close() waits for pending appends to be written


class RedisRunStore:
    """Run events in Redis Streams, shared by every instance that uses the same Redis and ``prefix``.

    ``liveness_s`` is how long an instance may go silent before other instances take it for dead and end its runs
    with an ``interrupted`` error; it refreshes its mark three times per period. ``ttl_s`` is how long a finished
    run stays readable. ``cache_s`` is how long a finished run's events stay in this instance's memory too.
    ``max_connections`` bounds this instance's connections to Redis. The settings are read when the store is made.

    Faults. ``socket_timeout_s`` bounds every Redis call (a stalled Redis fails a call rather than hanging it; the
    writer's retries are idempotent, so nothing is lost or doubled). While Redis is unreachable, ``create``,
    ``check`` and the viewer calls raise :class:`~tokenrelay.errors.StoreUnavailable`; appends are kept and written
    once Redis answers. A run's end waits at most ``finish_timeout_s`` for Redis: past that this instance's readers
    get the whole run from memory (the flusher goes on trying), so the owner's run ends within the backend's time
    plus saving plus ``finish_timeout_s``. Readers of runs driven elsewhere get a retryable ``store_unavailable``
    error and the finish after ``unavailable_s`` of Redis unreachable. Keys lost by a Redis that restarted empty
    are restored by each run's owner from its copy.

    Cluster. With ``cluster``, ``url`` is any node of a Redis Cluster and the store works against the whole cluster
    (``cluster.py``): every command stays in one slot, a batch is acknowledged once the slot's replica has it, and a
    master failing over is ridden out like a dropped connection. ``max_connections`` then bounds each node's
    connections, raised to at least 10,000 (redis-py's cluster client fails past its bound rather than waiting, and
    a tail reader holds one connection per followed slot).
    """

    shared = True  # any instance with the same Redis and prefix follows, and may end, any run

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tokenrelay:",
        ttl_s: float = 600.0,
        liveness_s: float = 3.0,
        running_ttl_s: float = 24 * 3600.0,
        cache_s: float = 30.0,
        max_connections: int = 200,
        socket_timeout_s: float = 5.0,
        unavailable_s: float = 10.0,
        finish_timeout_s: float = 4.0,
        cluster: bool = False,
        client: Client | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.liveness_s = liveness_s
        self.running_ttl_s = running_ttl_s
        self.cache_s = cache_s
        # Under the run manager's bound on one store call (5 s), so that this store, not the caller, decides.
        self.finish_timeout_s = finish_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self.instance_id = secrets.token_hex(8)
        if cluster:
            check_prefix(prefix)
        if client is None:
            client = connect(url, cluster=cluster, max_connections=max_connections, socket_timeout_s=socket_timeout_s)
        self._redis: Client = client
        self._keys = Keys(prefix)
        self._logs: dict[str, RunLog] = {}
        self._loading: dict[str, asyncio.Future[RunLog | None]] = {}
        self._writer = Writer(client, self._keys, ttl_s=ttl_s, running_ttl_s=running_ttl_s, cache_s=cache_s)
        self._writer.owner = self.instance_id
        block_s = socket_timeout_s / 2  # blocking reads wait less than the timeout that would cut them
        self._liveness = Liveness(
            client, self._keys, self.instance_id, self._writer, liveness_s=liveness_s, ttl_s=ttl_s
        )
        self._tails = Tails(
            client,
            self._keys,
            self.instance_id,
            self._logs,
            self._liveness,
            liveness_s=liveness_s,
            cache_s=cache_s,
            block_s=block_s,
            unavailable_s=unavailable_s,
        )
        self._inbox = Inbox(client, self._keys, self.instance_id, liveness_s=liveness_s, block_s=block_s)
        self._chat_runs = RedisChatRunIndex(client, prefix=prefix, ttl_s=running_ttl_s + ttl_s)
        self._viewers_script = client.register_script(VIEWERS)
        self._approvals = Approvals(self, sweep_s=max(0.2, liveness_s))  # runs paused for approvals (approvals.py)
        self._listener: StoreListener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # lifecycle

    async def check(self) -> None:
        async with self._reachable():
            async with asyncio.timeout(min(2.0, self.socket_timeout_s)):
                await self._redis.ping()

    @contextlib.asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        """Redis's connection failures (and a call that takes too long) as ``StoreUnavailable``."""
        try:
            yield
        except UNREACHABLE as exc:  # TimeoutError too: an OSError
            raise StoreUnavailable(
                f"Redis is unreachable ({type(exc).__name__}: {exc})", retry_after=max(1.0, self.liveness_s / 3)
            ) from exc

    async def start(self) -> None:
        if self._tasks:
            return
        await self._redis.ping()  # fail at startup, with Redis's own error, rather than at the first request
        await self._writer.load_script()
        await self._liveness.refresh()
        for coro, name in (
            (self._writer.run(), "flusher"),
            (self._liveness.keep_alive(self._forget_expired), "liveness"),
            (self._inbox.serve(), "inbox"),
            (self._approvals.sweep(), "approvals"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"tokenrelay-redis-{name}"))

    def attach(self, listener: StoreListener) -> None:
        self._listener = listener
        self._writer.listener = listener
        self._liveness.listener = listener
        self._inbox.listener = listener

    def chat_run_index(self) -> RedisChatRunIndex:
        """The useChat chat → run index, in the same Redis, so a resume works on any instance."""
        return self._chat_runs

    async def close(self) -> None:
        self._closing = True
        await self._writer.drain(_DRAIN_S)  # whatever is still pending goes out before the flusher stops
        await stop(self._tasks + self._tails.tasks())
        self._tasks = []
        await self._writer.close()
        for lg in self._logs.values():
            lg.wake()
        with contextlib.suppress(Exception):
            await self._redis.delete(self._keys.instance(self.instance_id), *self._tails.wake_keys())
        await self._redis.aclose()

    # writing (the owner)

    async def create(self, info: RunInfo) -> None:
        key = self._keys.meta(info.run_id)
        # Run ids are 128 random bits: no check for an existing run, which would cost a round trip per run.
        async with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=meta_of(info, self.instance_id))
            pipe.pexpire(key, int(self.running_ttl_s * 1000))
            await pipe.execute()
        info.status = "running"
        lg = RunLog(info, self.instance_id)
        self._logs[info.run_id] = lg
        self._writer.own(lg)

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        """Queue ``events`` for Redis (they are readable once written); ``RunClosedError`` if ended elsewhere."""
        return self._writer.append(run_id, events)

    async def finish(self, run_id: str) -> None:
        box = self._writer.outboxes.get(run_id)
        if box is None or box.log.info.status == "finished":
            return
        written = self._writer.finish(box)
        if not self._tasks:
            return  # closed (or never started): nothing will write it; the run's keys expire by themselves
        # Bounded: a run must be able to end (and its instance to shut down) while Redis is unreachable. Past the
        # bound (or when the caller gives up first) its readers here are served the whole run from memory.
        try:
            await asyncio.wait_for(asyncio.shield(written), self.finish_timeout_s)
        except TimeoutError:
            pass
        finally:
            if not written.done() and self._writer.outboxes.get(run_id) is box:
                self._writer.expose(box)

    # reading (any instance)

    async def get(self, run_id: str) -> RunInfo | None:
        lg = self._logs.get(run_id)
        if lg is not None and not lg.superseded:
            return lg.info
        async with self._reachable():
            raw = await self._redis.hgetall(self._keys.meta(run_id))
        return info_from_meta(run_id, raw)[0] if raw else None

    async def read_coalesced(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        return coalesce(await self.read(run_id, after, timeout))

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        lg = await self._local_log(run_id)
        if lg is None:
            return []
        lg.touched = time.monotonic()
        if len(lg.events) <= after and lg.info.status != "finished" and timeout != 0 and not self._closing:
            await lg.wait(timeout)
        return lg.since(after)

    async def _local_log(self, run_id: str) -> RunLog | None:
        """This instance's copy of a run, loading it from Redis (and following it) on first use."""
        lg = self._logs.get(run_id)
        if lg is not None and not lg.superseded:
            return lg
        loading = self._loading.get(run_id)
        if loading is not None:
            return await asyncio.shield(loading)
        fut: asyncio.Future[RunLog | None] = asyncio.get_running_loop().create_future()
        self._loading[run_id] = fut
        try:
            lg = await self._load(run_id)
            fut.set_result(lg)
            return lg
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a reader that shares the load sees it, nobody else must
            raise
        finally:
            del self._loading[run_id]

    async def _load(self, run_id: str) -> RunLog | None:
        """Read a run whole from Redis into a new local copy; a running one is followed from then on."""
        async with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._keys.meta(run_id))
            pipe.xrange(self._keys.events(run_id), "-", "+")
            raw, entries = await pipe.execute()
        if not raw:
            return None
        info, owner = info_from_meta(run_id, raw)
        lg = RunLog(info, owner, events=[entry_event(fields) for _, fields in entries])
        lg.touched = time.monotonic()
        self._forget_expired()
        self._logs[run_id] = lg
        if info.status == "finished":
            lg.expires = time.monotonic() + self.cache_s
        else:
            await self._tails.follow(lg)
        return lg

    def _forget_expired(self) -> None:
        """Forget local copies of finished runs that have had their time (Redis still has them until the TTL)."""
        now = time.monotonic()
        for run_id in [r for r, lg in self._logs.items() if lg.info.status == "finished" and lg.expires <= now]:
            lg = self._logs[run_id]
            box = self._writer.outboxes.get(run_id)
            if not lg.waiters and not lg.followed and (box is None or not box.unwritten):
                del self._logs[run_id]
                self._writer.forget(run_id)

    # viewers and requests between instances

    async def add_viewer(self, run_id: str) -> int:
        n, _, _ = await self._count_viewer(run_id, 1)
        return n

    async def remove_viewer(self, run_id: str) -> int:
        n, owner, status = await self._count_viewer(run_id, -1)
        if n == 0 and owner and owner != self.instance_id and status == "running":
            async with self._reachable():
                await self._inbox.send(owner, "idle", run_id)
        return n

    async def _count_viewer(self, run_id: str, delta: int) -> tuple[int, str, str]:
        """Count a viewer in (1) or out (-1); the new count, the run's owner and its status (empty if expired)."""
        async with self._reachable():
            reply: Any = await self._viewers_script(keys=[self._keys.meta(run_id)], args=[delta])
        n = int(reply[0])
        owner = decode(reply[1]) if len(reply) > 1 and reply[1] else ""
        status = decode(reply[2]) if len(reply) > 2 and reply[2] else ""
        return n, owner, status

    async def viewers(self, run_id: str) -> int:
        async with self._reachable():
            raw = await self._redis.hget(self._keys.meta(run_id), "viewers")
        return int(raw) if raw else 0

    # approvals (approvals.py)

    async def suspend(self, run_id: str, suspension: Suspension) -> int:
        return await self._approvals.suspend(run_id, suspension)

    async def record_decision(self, run_id: str, decision: ToolApprovalResponse) -> DecisionResult:
        return await self._approvals.record(run_id, decision)

    async def suspension(self, run_id: str) -> Suspension | None:
        return await self._approvals.suspension(run_id)

    async def cancel_waiting(self, run_id: str) -> bool:
        return await self._approvals.cancel(run_id)

    async def restore_waiting(self, info: RunInfo, events: Sequence[Event], suspension: Suspension) -> bool:
        return False  # Redis keeps its waiting runs itself

    async def request_cancel(self, run_id: str) -> bool:
        async with self._reachable():
            status, owner = await self._redis.hmget(self._keys.meta(run_id), ["status", "owner"])
        if status is None or decode(status) != "running" or not owner:
            return False
        if decode(owner) == self.instance_id:
            if self._listener is not None:
                self._listener.cancel_requested(run_id)
            return True
        async with self._reachable():
            await self._inbox.send(decode(owner), "cancel", run_id)
        return True
