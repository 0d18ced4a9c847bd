"""The shared run store: Redis Streams, so that any instance can serve any run's stream.

Layout (``P`` is the key prefix; the ``{run_id}`` hash tag keeps a run's keys in one Redis Cluster slot, so the Lua
scripts below are cluster-safe):

- ``P run:{id}:events`` — a Stream with one entry per event. The entry id is ``0-<seq>``: the store's sequence id
  *is* the stream id, so a resume after SSE id ``n`` is ``XREAD``/``XRANGE`` after ``0-n`` on every instance —
  exact, with no mapping to keep. The entry's one field ``e`` is the event as JSON (``events.event_to_dict``).
- ``P run:{id}:meta`` — a hash: user, conversation, backend, times, ``status``, ``last_seq``, ``owner`` (the
  instance that drives the run) and ``viewers`` (subscriptions on all instances).
- ``P instance:<iid>`` — the owner's liveness mark, ``SET … PX liveness`` and refreshed three times per period.
- ``P inbox:<iid>`` — a list other instances push requests to (``cancel <run>``, ``idle <run>``); the owner pops
  it with ``BLPOP``. A list rather than pub/sub: a request sent while the owner was briefly disconnected waits for
  it instead of being lost.

Writes. Only the owner appends, so it numbers events itself. ``append`` returns at once; one flusher task per
instance sends whatever is pending, for every run, in one pipeline of ``APPEND`` script calls, and sends the next
batch as soon as the previous one is acknowledged. An idle instance therefore writes each event the moment it is
appended (the first token waits one round trip, not a timer) and a busy one writes larger batches: batching
follows the load, as the subscribers' coalescing does. The script refuses to append to a run that is no longer
running and is idempotent on retry (a batch already applied is acknowledged again), so a flush retried after a
dropped connection neither loses nor duplicates events.

Reads. Events become visible to this instance's readers only once Redis has them, so a client can never hold an
id that another instance does not know about. Readers of a run this instance drives are served from memory and
woken by the flusher. Runs driven elsewhere are followed by this instance's tail readers, each one ``XREAD BLOCK``
over up to 256 streams, which fans out to every local reader: a thousand viewers of a run cost one stream in one
blocked read, and a thousand runs four connections, not a thousand.

Death. When a followed stream has been quiet for a third of ``liveness_s``, the tail reader checks its owner's
liveness mark (one ``EXISTS`` per owner for all its quiet streams); when it has expired, the ``INTERRUPT`` script
appends ``ErrorEvent("interrupted", retryable=True)`` and ``FinishEvent("error")`` and marks the run finished,
atomically and only if it is still running. So exactly one instance ends the run and every reader everywhere sees
the same ending; that instance also saves the partial answer to the history (``StoreListener.run_interrupted``).
If the presumed-dead owner was only partitioned, its next append fails with ``RunClosedError`` and it stops.

Expiry. A finished run's keys expire ``ttl_s`` after it finished; a running run's keys carry a long safety TTL
(``running_ttl_s``), so a run nobody ended (every instance died) cannot stay forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenrelay.coalescing import coalesce
from tokenrelay.events import ErrorEvent, Event, FinishEvent, event_from_dict, event_to_dict
from tokenrelay.stores.base import RunClosedError, RunInfo, StoredEvent, StoreListener

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the Redis run store needs the 'redis' extra: pip install 'tokenrelay[redis]'") from exc

__all__ = ["RedisChatRunIndex", "RedisRunStore"]

log = logging.getLogger("tokenrelay.stores.redis")

# KEYS: meta, events. ARGV: first seq, finish ("1"/"0"), finished ttl ms, now, running ttl ms, event JSON...
_APPEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return redis.error_reply('CLOSED run is not running')
end
local first = tonumber(ARGV[1])
local last = first + #ARGV - 6
local current = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
if current >= last and last >= first then
  return last -- this batch was applied already: a retry after a lost reply
end
if current ~= first - 1 then
  return redis.error_reply('GAP expected ' .. (current + 1) .. ', got ' .. first)
end
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], '0-' .. (first + i - 6), 'e', ARGV[i])
end
if last >= first then
  redis.call('HSET', KEYS[1], 'last_seq', last)
  if first == 1 then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'finished', 'finished_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return current + #ARGV - 5
"""

# KEYS: meta, events. ARGV: error JSON, finish JSON, finished ttl ms, now. Returns the last seq, or 0 if it was
# not running any more (someone else ended it first).
_INTERRUPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'e', ARGV[1])
redis.call('XADD', KEYS[2], '0-' .. (seq + 2), 'e', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'finished', 'last_seq', seq + 2, 'finished_at', ARGV[4], 'interrupted', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq + 2
"""

# KEYS: meta. ARGV: delta. Never creates the hash of an expired run.
_VIEWERS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, false}
end
local n = redis.call('HINCRBY', KEYS[1], 'viewers', ARGV[1])
if n < 0 then
  redis.call('HSET', KEYS[1], 'viewers', 0)
  n = 0
end
return {n, redis.call('HGET', KEYS[1], 'owner'), redis.call('HGET', KEYS[1], 'status')}
"""

_INBOX_TTL_MS = 60_000


@dataclass(slots=True)
class _Log:
    """A run as this instance knows it: the events Redis has acknowledged, and who waits for more."""

    info: RunInfo
    owner: str
    owned: bool
    events: list[Event] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # Owned runs only: appended but not yet acknowledged by Redis, and the finish to send with them.
    pending: list[Event] = field(default_factory=list)
    inflight: int = 0
    finishing: asyncio.Future[None] | None = None
    closed: bool = False
    # Runs driven elsewhere: the reader that follows the stream, when a reader last came by (for eviction), when
    # the stream last moved and when its owner was last checked (monotonic).
    tail: _Tails | None = None
    touched: float = 0.0
    moved: float = 0.0
    checked: float = 0.0
    expires: float = 0.0  # finished runs: when to drop this copy (monotonic)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


@dataclass(slots=True, eq=False)
class _Tails:
    """One blocking ``XREAD`` following up to ``_TAILS_PER_READER`` runs driven elsewhere, for this instance.

    A run added while the read is blocked would wait for it to time out; instead the adder appends to the reader's
    own wake-up stream, which is among the keys read, so the read returns at once and starts again with the new run.
    """

    wake_key: str
    logs: dict[str, _Log] = field(default_factory=dict)  # events key → log
    wake_cursor: str = "0-0"
    task: asyncio.Task[None] | None = None


_TAILS_PER_READER = 256


def _wake_one(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _dump(event: Event) -> bytes:
    return orjson.dumps(event_to_dict(event))


def _load(raw: bytes) -> Event:
    return event_from_dict(orjson.loads(raw))


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRunStore:
    """Run events in Redis Streams, shared by every instance that uses the same Redis and ``prefix``.

    ``liveness_s`` is how long an instance may go silent before other instances take it for dead and end its runs
    with an ``interrupted`` error; it refreshes its mark three times per period. ``ttl_s`` is how long a finished
    run stays readable. ``cache_s`` is how long a finished run's events stay in this instance's memory too.
    ``max_connections`` bounds this instance's connections to Redis.
    """

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
        client: aioredis.Redis | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.liveness_s = liveness_s
        self.running_ttl_s = running_ttl_s
        self.cache_s = cache_s
        self.finish_timeout_s = 10.0
        self.instance_id = secrets.token_hex(8)
        # A blocking pool: a burst of readers waits for a connection instead of failing. Few are held for long
        # (one per tail reader, one for the inbox), so the bound is on bursts of short commands.
        if client is None:
            pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30)
            client = aioredis.Redis(connection_pool=pool)
        self._redis: aioredis.Redis = client
        self._append_sha = ""  # loaded in start(); the flusher calls EVALSHA itself to keep one round trip
        self._interrupt_script = self._redis.register_script(_INTERRUPT)
        self._viewers_script = self._redis.register_script(_VIEWERS)
        self._listener: StoreListener | None = None
        self._logs: dict[str, _Log] = {}
        self._loading: dict[str, asyncio.Future[_Log | None]] = {}
        self._dirty: dict[str, _Log] = {}
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: list[_Tails] = []
        self._closing = False

    # keys

    def _meta_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{{{run_id}}}:meta"

    def _events_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{{{run_id}}}:events"

    def _instance_key(self, instance_id: str) -> str:
        return f"{self.prefix}instance:{instance_id}"

    def _inbox_key(self, instance_id: str) -> str:
        return f"{self.prefix}inbox:{instance_id}"

    # lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        await self._redis.ping()  # fail at startup, with Redis's own error, rather than at the first request
        self._append_sha = _str(await self._redis.script_load(_APPEND))
        await self._refresh_liveness()
        for coro, name in (
            (self._flusher(), "flusher"),
            (self._keep_alive(), "liveness"),
            (self._inbox(), "inbox"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"tokenrelay-redis-{name}"))

    def attach(self, listener: StoreListener) -> None:
        self._listener = listener

    def chat_run_index(self) -> RedisChatRunIndex:
        """The useChat chat → run index, in the same Redis, so a resume works on any instance."""
        return RedisChatRunIndex(self)

    async def close(self) -> None:
        self._closing = True
        # Whatever is still pending goes out before the flusher stops.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                while self._dirty:
                    self._wakeup.set()
                    await asyncio.sleep(0.005)
        tasks = self._tasks + [r.task for r in self._readers if r.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for lg in self._logs.values():
            lg.wake()
        with contextlib.suppress(Exception):
            await self._redis.delete(self._instance_key(self.instance_id), *(r.wake_key for r in self._readers))
        await self._redis.aclose()

    # writing (the owner)

    async def create(self, info: RunInfo) -> None:
        meta: dict[Any, Any] = {
            "user_id": info.user_id,
            "conversation_id": info.conversation_id,
            "backend": info.backend,
            "created_at": repr(info.created_at),
            "status": "running",
            "last_seq": 0,
            "owner": self.instance_id,
            "viewers": 0,
            "extra": orjson.dumps(info.extra).decode(),
        }
        key = self._meta_key(info.run_id)
        # Run ids are 128 random bits: no check for an existing run, which would cost a round trip per run.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=meta)
            pipe.pexpire(key, int(self.running_ttl_s * 1000))
            await pipe.execute()
        info.status = "running"
        self._logs[info.run_id] = _Log(info, self.instance_id, owned=True)

    async def append(self, run_id: str, events: Sequence[Event]) -> int:
        lg = self._logs.get(run_id)
        if lg is None or lg.closed or not lg.owned:
            raise RunClosedError(run_id)
        if lg.finishing is not None:
            raise ValueError(f"run {run_id} is finished")
        lg.pending.extend(events)
        self._dirty[run_id] = lg
        self._wakeup.set()
        return len(lg.events) + lg.inflight + len(lg.pending)

    async def finish(self, run_id: str) -> None:
        lg = self._logs.get(run_id)
        if lg is None or not lg.owned or lg.info.status == "finished":
            return
        if lg.finishing is None:
            lg.finishing = asyncio.get_running_loop().create_future()
            self._dirty[run_id] = lg
            self._wakeup.set()
        if not self._tasks:
            return  # closed (or never started): nothing will write it; the run's keys expire by themselves
        # Bounded: a run must be able to end (and its instance to shut down) while Redis is unreachable.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(lg.finishing), self.finish_timeout_s)

    async def _flusher(self) -> None:
        backoff = 0.05
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._dirty:
                continue
            batch, self._dirty = self._dirty, {}
            sent: list[tuple[_Log, list[Event], bool]] = []
            async with self._redis.pipeline(transaction=False) as pipe:
                now = repr(time.time())
                for run_id, lg in batch.items():
                    events, lg.pending = lg.pending, []
                    lg.inflight = len(events)
                    finish = lg.finishing is not None
                    pipe.evalsha(
                        self._append_sha,
                        2,
                        self._meta_key(run_id),
                        self._events_key(run_id),
                        len(lg.events) + 1,
                        "1" if finish else "0",
                        int(self.ttl_s * 1000),
                        now,
                        int(self.running_ttl_s * 1000),
                        *map(_dump, events),
                    )
                    sent.append((lg, events, finish))
                try:
                    results = await pipe.execute(raise_on_error=False)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    results = [exc] * len(sent)
            retry = False
            for (lg, events, finish), result in zip(sent, results, strict=True):
                lg.inflight = 0
                if isinstance(result, NoScriptError):
                    # Redis restarted or its scripts were flushed: load ours again and resend.
                    with contextlib.suppress(Exception):
                        self._append_sha = _str(await self._redis.script_load(_APPEND))
                if isinstance(result, ResponseError) and str(result).startswith("CLOSED"):
                    self._close_log(lg)
                elif isinstance(result, ResponseError) and not isinstance(result, NoScriptError):
                    log.error("run %s: Redis refused its events: %s", lg.info.run_id, result)
                    self._close_log(lg)
                elif isinstance(result, Exception):
                    log.warning("run %s: could not write %d events to Redis: %s", lg.info.run_id, len(events), result)
                    lg.pending[:0] = events  # keep the order; sent again, exactly once, by the idempotent script
                    self._dirty[lg.info.run_id] = lg
                    retry = True
                else:
                    self._acknowledged(lg, events, finish)
            if retry:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                self._wakeup.set()
            else:
                backoff = 0.05

    def _acknowledged(self, lg: _Log, events: list[Event], finish: bool) -> None:
        lg.events.extend(events)
        lg.info.last_seq = len(lg.events)
        if finish and not lg.pending:
            lg.info.status = "finished"
            lg.info.finished_at = time.time()
            lg.expires = time.monotonic() + min(self.cache_s, self.ttl_s)
            if lg.finishing is not None and not lg.finishing.done():
                lg.finishing.set_result(None)
        elif lg.pending or finish:
            self._dirty[lg.info.run_id] = lg
            self._wakeup.set()
        lg.wake()

    def _close_log(self, lg: _Log) -> None:
        """Another instance ended this run: drop what was not written and let the owner stop."""
        log.warning("run %s: ended elsewhere; %d unwritten events dropped", lg.info.run_id, len(lg.pending))
        lg.closed = True
        lg.pending = []
        lg.owned = False  # from now on, read it like any other run: from Redis
        lg.info.status = "finished"
        lg.expires = time.monotonic()
        if lg.finishing is not None and not lg.finishing.done():
            lg.finishing.set_result(None)
        lg.wake()
        if self._listener is not None:
            self._listener.run_lost(lg.info.run_id)

    # reading (any instance)

    async def get(self, run_id: str) -> RunInfo | None:
        lg = self._logs.get(run_id)
        if lg is not None and not lg.closed:
            return lg.info
        raw = await self._redis.hgetall(self._meta_key(run_id))
        return self._info(run_id, raw)[0] if raw else None

    def _info(self, run_id: str, raw: dict[Any, Any]) -> tuple[RunInfo, str]:
        meta = {_str(k): _str(v) for k, v in raw.items()}
        finished_at = meta.get("finished_at")
        info = RunInfo(
            run_id=run_id,
            user_id=meta.get("user_id", ""),
            conversation_id=meta.get("conversation_id", ""),
            backend=meta.get("backend", ""),
            created_at=float(meta.get("created_at", "0")),
            status="finished" if meta.get("status") == "finished" else "running",
            last_seq=int(meta.get("last_seq", "0")),
            finished_at=float(finished_at) if finished_at else None,
            extra=orjson.loads(meta.get("extra", "{}")),
        )
        return info, meta.get("owner", "")

    async def read_coalesced(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        return coalesce(await self.read(run_id, after, timeout))

    async def read(self, run_id: str, after: int, timeout: float | None) -> list[StoredEvent]:
        lg = await self._log(run_id)
        if lg is None:
            return []
        lg.touched = time.monotonic()
        if len(lg.events) <= after and lg.info.status == "running" and timeout != 0 and not self._closing:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            lg.waiters.append(fut)
            handle = loop.call_later(timeout, _wake_one, fut) if timeout is not None else None
            try:
                await fut
            finally:
                if handle is not None:
                    handle.cancel()
        events = lg.events
        return [StoredEvent(seq, events[seq - 1]) for seq in range(after + 1, len(events) + 1)]

    async def _log(self, run_id: str) -> _Log | None:
        """This instance's copy of a run, loading it (and starting its tail) on first use."""
        lg = self._logs.get(run_id)
        if lg is not None and not (lg.closed and lg.tail is None):
            return lg
        loading = self._loading.get(run_id)
        if loading is not None:
            return await asyncio.shield(loading)
        fut: asyncio.Future[_Log | None] = asyncio.get_running_loop().create_future()
        self._loading[run_id] = fut
        try:
            lg = await self._fetch(run_id)
            fut.set_result(lg)
            return lg
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a reader that shares the load sees it, nobody else must
            raise
        finally:
            del self._loading[run_id]

    async def _fetch(self, run_id: str) -> _Log | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._meta_key(run_id))
            pipe.xrange(self._events_key(run_id), "-", "+")
            raw, entries = await pipe.execute()
        if not raw:
            return None
        info, owner = self._info(run_id, raw)
        lg = _Log(info, owner, owned=False, events=[_load(fields[b"e"]) for _, fields in entries])
        lg.touched = time.monotonic()
        self._sweep()
        self._logs[run_id] = lg
        if info.status == "finished":
            lg.expires = time.monotonic() + self.cache_s
        else:
            await self._follow(lg)
        return lg

    async def _follow(self, lg: _Log) -> None:
        """Have one of this instance's blocking readers follow ``lg`` (a run driven elsewhere)."""
        lg.moved = lg.checked = time.monotonic()
        reader = next((r for r in self._readers if len(r.logs) < _TAILS_PER_READER), None)
        if reader is None:
            reader = _Tails(f"{self.prefix}wake:{self.instance_id}:{secrets.token_hex(4)}")
            self._readers.append(reader)
        reader.logs[self._events_key(lg.info.run_id)] = lg
        lg.tail = reader
        if reader.task is None or reader.task.done():
            reader.task = asyncio.create_task(self._tail(reader), name="tokenrelay-redis-tail")
        else:
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                # Cut the reader's blocked XREAD short, so that it starts reading this run at once.
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(reader.wake_key, {b"w": b"1"}, maxlen=16, approximate=False)
                    pipe.pexpire(reader.wake_key, _INBOX_TTL_MS)
                    await pipe.execute()

    def _unfollow(self, reader: _Tails, key: str) -> None:
        lg = reader.logs.pop(key)
        lg.tail = None
        if lg.info.status == "finished":
            lg.expires = time.monotonic() + self.cache_s
        else:
            self._logs.pop(lg.info.run_id, None)  # nobody reads it here any more: forget it
        lg.wake()

    async def _tail(self, reader: _Tails) -> None:
        """Follow some runs driven elsewhere until they finish, waking this instance's readers of them."""
        poll_s = max(0.01, self.liveness_s / 3)
        try:
            while reader.logs:
                keys: dict[Any, Any] = {reader.wake_key: reader.wake_cursor}
                keys.update((key, f"0-{len(lg.events)}") for key, lg in reader.logs.items())
                try:
                    reply: Any = await self._redis.xread(keys, count=1000, block=int(poll_s * 1000))
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("cannot read runs from Redis: %s", exc)
                    await asyncio.sleep(poll_s)
                    continue
                now = time.monotonic()
                for raw_key, entries in reply or ():
                    key = _str(raw_key)
                    if key == reader.wake_key:
                        reader.wake_cursor = _str(entries[-1][0])
                        continue
                    lg = reader.logs.get(key)
                    if lg is None:
                        continue
                    lg.events.extend(_load(fields[b"e"]) for _, fields in entries)
                    lg.info.last_seq = len(lg.events)
                    lg.moved = now
                    if lg.events and type(lg.events[-1]) is FinishEvent:
                        lg.info.status = "finished"
                        lg.info.finished_at = time.time()
                    lg.wake()
                for key, lg in list(reader.logs.items()):
                    if lg.info.status == "finished" or (not lg.waiters and now - lg.touched > self.cache_s):
                        self._unfollow(reader, key)
                quiet = [lg for lg in reader.logs.values() if now - max(lg.moved, lg.checked) >= poll_s]
                if quiet:
                    await self._check_owners(quiet, now)
        finally:
            for key in list(reader.logs):
                self._unfollow(reader, key)
            if reader in self._readers:
                self._readers.remove(reader)

    async def _check_owners(self, logs: list[_Log], now: float) -> None:
        """These streams were quiet: are their owners still alive? End the runs of dead ones."""
        owners = sorted({lg.owner for lg in logs})
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for owner in owners:
                    pipe.exists(self._instance_key(owner))
                for lg in logs:
                    pipe.hget(self._meta_key(lg.info.run_id), "status")
                replies = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("cannot check instances' liveness in Redis: %s", exc)
            return
        alive = dict(zip(owners, replies[: len(owners)], strict=True))
        for lg, status in zip(logs, replies[len(owners) :], strict=True):
            lg.checked = now
            if status is None:  # expired under us
                lg.info.status = "finished"
                lg.wake()
            elif _str(status) == "running" and not alive[lg.owner]:
                await self._check_owner(lg)

    async def _check_owner(self, lg: _Log) -> None:
        """The run's owner is gone: end the run (once, whoever is first) and, if this instance did, save it."""
        run_id = lg.info.run_id
        error = ErrorEvent("interrupted", "the instance running this answer stopped; ask again", retryable=True)
        last = await self._interrupt_script(
            keys=[self._meta_key(run_id), self._events_key(run_id)],
            args=[_dump(error), _dump(FinishEvent("error")), int(self.ttl_s * 1000), repr(time.time())],
        )
        if last and self._listener is not None:
            log.warning("run %s: its instance %s is gone; ended it as interrupted", run_id, lg.owner)
            events = [StoredEvent(i + 1, e) for i, e in enumerate(lg.events)]
            events += [StoredEvent(int(last) - 1, error), StoredEvent(int(last), FinishEvent("error"))]
            await self._listener.run_interrupted(lg.info, events)

    def _sweep(self) -> None:
        """Forget local copies of finished runs that have had their time (Redis still has them until the TTL)."""
        now = time.monotonic()
        for run_id in [r for r, lg in self._logs.items() if lg.info.status == "finished" and lg.expires <= now]:
            lg = self._logs[run_id]
            if not lg.waiters and lg.tail is None and not lg.pending:
                del self._logs[run_id]

    # viewers and requests between instances

    async def add_viewer(self, run_id: str) -> int:
        n, _, _ = await self._viewers(run_id, 1)
        return n

    async def remove_viewer(self, run_id: str) -> int:
        n, owner, status = await self._viewers(run_id, -1)
        if n == 0 and owner and owner != self.instance_id and status == "running":
            await self._send(owner, f"idle {run_id}")
        return n

    async def _viewers(self, run_id: str, delta: int) -> tuple[int, str, str]:
        reply = await self._viewers_script(keys=[self._meta_key(run_id)], args=[delta])
        n = int(reply[0])
        owner = _str(reply[1]) if len(reply) > 1 and reply[1] else ""
        status = _str(reply[2]) if len(reply) > 2 and reply[2] else ""
        return n, owner, status

    async def viewers(self, run_id: str) -> int:
        raw = await self._redis.hget(self._meta_key(run_id), "viewers")
        return int(raw) if raw else 0

    async def request_cancel(self, run_id: str) -> bool:
        status, owner = await self._redis.hmget(self._meta_key(run_id), ["status", "owner"])
        if status is None or _str(status) != "running" or not owner:
            return False
        if _str(owner) == self.instance_id:
            if self._listener is not None:
                self._listener.cancel_requested(run_id)
            return True
        await self._send(_str(owner), f"cancel {run_id}")
        return True

    async def _send(self, instance_id: str, message: str) -> None:
        key = self._inbox_key(instance_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, message)
            pipe.pexpire(key, _INBOX_TTL_MS)
            await pipe.execute()

    async def _inbox(self) -> None:
        key = self._inbox_key(self.instance_id)
        timeout = max(1, round(self.liveness_s))
        while True:
            try:
                item = await self._redis.blpop([key], timeout=timeout)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("cannot read this instance's requests from Redis: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if item is None or self._listener is None:
                continue
            kind, _, run_id = _str(item[1]).partition(" ")
            if kind == "cancel":
                self._listener.cancel_requested(run_id)
            elif kind == "idle":
                self._listener.viewers_gone(run_id)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_s / 3)
            try:
                await self._refresh_liveness()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("cannot refresh this instance's liveness in Redis: %s", exc)
            self._sweep()

    async def _refresh_liveness(self) -> None:
        key = self._instance_key(self.instance_id)
        ttl = int(self.liveness_s * 1000)
        if await self._redis.set(key, b"1", px=ttl, xx=True):
            return
        # The mark had expired (a first start, or this instance was silent too long and may have been taken for
        # dead): set it again, then stop driving the runs that another instance has ended meanwhile.
        await self._redis.set(key, b"1", px=ttl)
        owned = [lg for lg in self._logs.values() if lg.owned and lg.info.status == "running"]
        if not owned:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for lg in owned:
                pipe.hget(self._meta_key(lg.info.run_id), "status")
            statuses = await pipe.execute()
        for lg, status in zip(owned, statuses, strict=True):
            if status is None or _str(status) != "running":
                self._close_log(lg)


class RedisChatRunIndex:
    """useChat's chat → latest run index, shared by every instance (``server.chat_runs.ChatRunIndex``).

    One string key per (user, chat), expiring with the run it points to: after that there is nothing to resume.
    """

    def __init__(self, store: RedisRunStore) -> None:
        self._store = store

    def _key(self, user_id: str, chat_id: str) -> str:
        # Lengths first, so that no pair of ids can collide with another once joined.
        return f"{self._store.prefix}chat:{len(user_id)}:{user_id}:{chat_id}"

    async def get(self, user_id: str, chat_id: str) -> str | None:
        raw = await self._store._redis.get(self._key(user_id, chat_id))
        return _str(raw) if raw is not None else None

    async def set(self, user_id: str, chat_id: str, run_id: str) -> None:
        ttl = int((self._store.running_ttl_s + self._store.ttl_s) * 1000)
        await self._store._redis.set(self._key(user_id, chat_id), run_id, px=ttl)
