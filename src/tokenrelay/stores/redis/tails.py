"""Tail readers: how an instance follows the runs that other instances drive.

Readers of a run this instance drives are served from memory and woken by the writer. Runs driven elsewhere are
followed by this instance's tail readers, each one ``XREAD BLOCK`` over up to ``_RUNS_PER_READER`` streams, which
fans out to every local reader: a thousand viewers of a run cost one stream in one blocked read, and a thousand runs
four connections, not a thousand; each reader packs its ``XREAD`` itself on a connection of its own and takes the
raw reply (``wire.py``). On a Redis Cluster one command cannot span slots, and every run has a slot of its own (its
``{run_id}`` hash tag), so a reader there follows the runs of one slot: a blocked read (and a connection to the
slot's node) per followed run, each still shared by all of the run's viewers on this instance.

A quiet stream's owner is checked for liveness (``liveness.py``). When Redis stays unreachable for
``unavailable_s``, the runs a reader follows are ended for their readers here with a retryable ``store_unavailable``
error and a finish: a viewer never waits on pings for a Redis that does not come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from tokenrelay.events import ErrorEvent, FinishEvent
from tokenrelay.stores.redis.cluster import UNREACHABLE, Client
from tokenrelay.stores.redis.layout import Keys, event_of
from tokenrelay.stores.redis.liveness import Liveness, end_locally
from tokenrelay.stores.redis.logs import RunLog
from tokenrelay.stores.redis.wire import Line, pack

__all__ = ["TailReader", "Tails"]

logger = logging.getLogger("tokenrelay.stores.redis")

_RUNS_PER_READER = 256
_WAKE_TTL_MS = 60_000


@dataclass(slots=True, eq=False)
class TailReader:
    """One blocking ``XREAD`` following up to ``_RUNS_PER_READER`` runs driven elsewhere, for this instance.

    A run added while the read is blocked would wait for it to time out; instead the adder appends to the reader's
    own wake-up stream, which is among the keys read, so the read returns at once and starts again with the new run.
    """

    wake_key: str
    slot: int | None = None  # on a cluster, the one hash slot of every key it reads
    logs: dict[bytes, RunLog] = field(default_factory=dict)  # events key → log
    wake_cursor: bytes = b"0-0"
    task: asyncio.Task[None] | None = None
    line: Line | None = None  # one server: the reader's own connection
    swept: float = 0.0  # when its runs were last looked over (``Tails._sweep``)

    def streams(self) -> tuple[list[bytes], list[bytes]]:
        """What to ``XREAD``: the wake-up stream after its last entry, each followed stream after its last event."""
        keys = [self.wake_key.encode(), *self.logs]
        return keys, [self.wake_cursor, *(b"0-%d" % len(lg.events) for lg in self.logs.values())]


class Tails:
    """This instance's tail readers. ``logs`` is the store's own map of runs, which a reader leaves when let go."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        instance_id: str,
        logs: dict[str, RunLog],
        liveness: Liveness,
        *,
        liveness_s: float,
        cache_s: float,
        block_s: float,
        unavailable_s: float,
    ) -> None:
        self.readers: list[TailReader] = []
        self._redis = client
        self._keys = keys
        self._instance_id = instance_id
        self._logs = logs
        self._liveness = liveness
        self._poll_s = max(0.01, liveness_s / 3)
        self._block_ms = max(1, int(min(self._poll_s, block_s) * 1000))
        self._call_s = 2 * block_s + 1.0  # past the socket timeout: a call that outlives it is given up
        self._cache_s = cache_s
        self._unavailable_s = unavailable_s

    def tasks(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self.readers if r.task is not None]

    def wake_keys(self) -> list[str]:
        return [r.wake_key for r in self.readers]

    async def follow(self, lg: RunLog) -> None:
        """Have one of this instance's tail readers follow ``lg`` (a run driven elsewhere) until it finishes."""
        lg.moved = lg.checked = time.monotonic()
        key = self._keys.events(lg.info.run_id).encode()
        # One XREAD must stay in one slot on a cluster: a reader per slot, its wake-up stream tagged into the slot.
        slot = self._redis.keyslot(key) if isinstance(self._redis, RedisCluster) else None
        reader = next((r for r in self.readers if r.slot == slot and len(r.logs) < _RUNS_PER_READER), None)
        if reader is None:
            tag = lg.info.run_id if slot is not None else None
            reader = TailReader(self._keys.wake(self._instance_id, secrets.token_hex(4), tag), slot)
            self.readers.append(reader)
        reader.logs[key] = lg
        lg.followed = True
        if reader.task is None or reader.task.done():
            reader.task = asyncio.create_task(self._read_until_done(reader), name="tokenrelay-redis-tail")
        else:
            with contextlib.suppress(*UNREACHABLE):
                # Cut the reader's blocked XREAD short, so that it starts reading this run at once.
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(reader.wake_key, {b"w": b"1"}, maxlen=16, approximate=False)
                    pipe.pexpire(reader.wake_key, _WAKE_TTL_MS)
                    await pipe.execute()

    def _let_go(self, reader: TailReader, key: bytes) -> None:
        """Stop following a run: keep a finished one's copy a while; forget one nobody reads here any more."""
        lg = reader.logs.pop(key)
        lg.followed = False
        # A run ended here alone (Redis could not be read) is not kept: the next reader asks Redis again.
        if lg.info.status == "finished" and not lg.ending:
            lg.expires = time.monotonic() + self._cache_s
        else:
            self._logs.pop(lg.info.run_id, None)
        lg.wake()

    async def _xread(self, reader: TailReader) -> Any:
        """One blocking ``XREAD`` of the reader's streams: ``[[key, [[id, [field, value, …]], …]], …]`` (a map of
        key → entries in RESP3) or ``None``."""
        keys, ids = reader.streams()
        async with asyncio.timeout(self._call_s):  # a connection torn down under it can hang a read
            if isinstance(self._redis, RedisCluster):
                reply: Any = await self._redis.xread(
                    dict(zip(keys, ids, strict=True)), count=1000, block=self._block_ms
                )
                return [
                    [key, [[i, [x for kv in fields.items() for x in kv]] for i, fields in entries]]
                    for key, entries in _streams(reply)
                ]
            if reader.line is None:
                reader.line = Line(self._redis)
            command = [b"XREAD", b"COUNT", b"1000", b"BLOCK", b"%d" % self._block_ms, b"STREAMS", *keys, *ids]
            return await reader.line.call(pack(command))

    async def _read_until_done(self, reader: TailReader) -> None:
        """Follow the reader's runs until none is left, waking this instance's readers of them."""
        down_since: float | None = None
        try:
            while reader.logs:
                try:
                    reply = await self._xread(reader)
                except UNREACHABLE as exc:
                    logger.warning("cannot read runs from Redis: %s", exc)
                    self._liveness.trouble()
                    down_since = down_since or time.monotonic()
                    if time.monotonic() - down_since >= self._unavailable_s:
                        self._give_up(reader, exc)
                    await asyncio.sleep(self._poll_s)
                    continue
                down_since = None
                now = time.monotonic()
                for key in self._take(reader, reply or (), now):
                    if key in reader.logs and reader.logs[key].info.status == "finished":
                        self._let_go(reader, key)
                if now - reader.swept >= self._poll_s or not reply:
                    reader.swept = now
                    await self._sweep(reader, now)
        finally:
            for key in list(reader.logs):
                self._let_go(reader, key)
            if reader in self.readers:
                self.readers.remove(reader)
            if reader.line is not None:
                await reader.line.close()

    async def _sweep(self, reader: TailReader, now: float) -> None:
        """Look the reader's runs over (after a quiet read, and at least every poll): let go of the finished ones
        and of those nobody reads here any more; check the owners of quiet ones."""
        for key, lg in list(reader.logs.items()):
            if lg.info.status == "finished" or (not lg.waiters and now - lg.touched > self._cache_s):
                self._let_go(reader, key)
        quiet = [lg for lg in reader.logs.values() if now - max(lg.moved, lg.checked) >= self._poll_s]
        if quiet:
            try:
                async with asyncio.timeout(self._call_s):
                    await self._liveness.end_runs_of_dead_owners(quiet, now)
            except UNREACHABLE as exc:
                logger.warning("cannot check the owners of quiet runs: %r", exc)
                self._liveness.trouble()

    def _give_up(self, reader: TailReader, exc: Exception) -> None:
        """Redis has been unreachable too long: end the reader's runs for their readers here (retryable)."""
        error = ErrorEvent(
            "store_unavailable", f"Redis is unreachable ({type(exc).__name__}); resume later", True, self._poll_s * 3
        )
        for key, lg in list(reader.logs.items()):
            end_locally(lg, error)
            self._let_go(reader, key)

    @staticmethod
    def _take(reader: TailReader, reply: Any, now: float) -> list[bytes]:
        """Add what one ``XREAD`` returned to the runs' logs, and wake their readers; the keys of the runs that
        moved."""
        moved = []
        for key, entries in _streams(reply):
            if key == reader.wake_key.encode():
                reader.wake_cursor = entries[-1][0]
                continue
            lg = reader.logs.get(key)
            if lg is None:
                continue
            lg.events.extend(event_of(fields[1]) for _, fields in entries)
            lg.info.last_seq = len(lg.events)
            lg.moved = now
            if lg.events and type(lg.events[-1]) is FinishEvent:
                lg.info.status = "finished"
                lg.info.finished_at = time.time()
            lg.wake()
            moved.append(key)
        return moved


def _streams(reply: Any) -> Any:
    """An ``XREAD`` reply's (key, entries) pairs, whether RESP2 (a list of pairs) or RESP3 (a map) or empty."""
    if not reply:
        return ()
    return reply.items() if isinstance(reply, dict) else reply
