"""The writer: one flusher task per instance sends the appends of every run it drives to Redis, in batches.

Only a run's owner appends, so it numbers events itself. ``append`` returns at once; the flusher sends whatever is
pending, for every run, in one call of the ``APPEND`` script (on a cluster, a pipeline of one call per run), packed
by the flusher itself on a connection of its own (``wire.py``), and sends the next batch as soon as the previous one
is acknowledged. An idle instance therefore writes each event the moment it is appended (the first token waits
one round trip, not a timer) and a busy one writes larger batches: batching follows the load, as the subscribers'
coalescing does. The script is idempotent by sequence id (ids Redis has are skipped), so a flush retried after a
timeout or a dropped connection neither loses nor duplicates events, whatever was merged into it meanwhile. It
refuses a run another instance ended (the run is abandoned) and one whose keys are gone (Redis restarted empty):
the owner then restores the keys from its copy and goes on.

Events become visible to this instance's readers (``RunLog.events``) only once Redis has acknowledged them, except
for a run whose end Redis could not take in time (:meth:`Writer.expose`): its readers get the whole run from here,
under the ids Redis will give it, while the flusher keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from tokenrelay.errors import RunClosedError, RunFinishedError
from tokenrelay.events import Event
from tokenrelay.stores.base import StoreListener
from tokenrelay.stores.redis.cluster import CLUSTER_ERRORS, UNREACHABLE, Client, add_wait
from tokenrelay.stores.redis.layout import Keys, decode, dump_event, meta_of
from tokenrelay.stores.redis.logs import RunLog
from tokenrelay.stores.redis.scripts import APPEND, RESTORE
from tokenrelay.stores.redis.wire import Line, pack

__all__ = ["Outbox", "Writer"]

logger = logging.getLogger("tokenrelay.stores.redis")

# What a batch's one call can fail with: Redis cannot be reached, or it refused the whole call (``NOSCRIPT``: its
# scripts were flushed).
_FAILED: tuple[type[Exception], ...] = (*UNREACHABLE, ResponseError)
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 1.0


@dataclass(slots=True, eq=False)
class Outbox:
    """The writer's side of a run this instance drives: appended but not yet acknowledged, and the finish to send."""

    log: RunLog
    keys: tuple[bytes, bytes]  # the run's meta and events keys, as the flusher sends them
    acked: int = 0  # the last sequence id Redis has acknowledged
    sending: list[Event] = field(default_factory=list)  # the batch Redis has not answered yet (ids from acked + 1)
    pending: list[Event] = field(default_factory=list)  # appended since (ids after the batch's)
    finishing: asyncio.Future[None] | None = None  # set by finish(); resolved once the finish is written (or moot)
    missing: bool = False  # Redis lost the run's keys: restore them before the next batch

    @property
    def last_seq(self) -> int:
        """The sequence id of the last event appended (written or not)."""
        return self.acked + len(self.sending) + len(self.pending)

    @property
    def unwritten(self) -> bool:
        return bool(self.sending or self.pending) or (self.finishing is not None and not self.finishing.done())

    def release(self) -> None:
        """Let a ``finish()`` that waits return: the finish is written, or moot."""
        if self.finishing is not None and not self.finishing.done():
            self.finishing.set_result(None)


@dataclass(slots=True)
class _Sent:
    """One run's part of a batch: its events and whether the batch finishes the run."""

    box: Outbox
    first: int  # the sequence id of the batch's first event
    events: list[Event]
    finish: bool


class Writer:
    """The runs this instance drives (``outboxes``), and the flusher that writes them (:meth:`run`)."""

    def __init__(self, client: Client, keys: Keys, *, ttl_s: float, running_ttl_s: float, cache_s: float) -> None:
        self.outboxes: dict[str, Outbox] = {}
        self.listener: StoreListener | None = None
        self._redis = client
        self._keys = keys
        self._ttl_ms = int(ttl_s * 1000)
        self._running_ttl_ms = int(running_ttl_s * 1000)
        self._keep_finished_s = min(cache_s, ttl_s)  # how long a finished run's copy stays
        self._append_sha = b""  # the flusher calls EVALSHA itself, to keep one round trip per batch
        # One server: the flusher's own connection, each batch one packed EVALSHA. A cluster: its client's pipelines.
        self._line = None if isinstance(client, RedisCluster) else Line(client)
        self._restore = client.register_script(RESTORE)
        self.owner = ""  # this instance's id, written into a restored run's meta
        self._due: dict[str, Outbox] = {}
        self._work = asyncio.Event()
        self._idle = asyncio.Event()  # nothing due and no batch in flight
        self._idle.set()

    async def load_script(self) -> None:
        """Load ``APPEND`` (on one server through the flusher's connection, which is then open for the first batch)."""
        if self._line is None:
            self._append_sha = decode(await self._redis.script_load(APPEND)).encode()
        else:
            self._append_sha = bytes(await self._line.call(pack([b"SCRIPT", b"LOAD", APPEND.encode()])))

    async def close(self) -> None:
        """Give the flusher's connection back (the flusher has stopped)."""
        if self._line is not None:
            await self._line.close()

    def own(self, lg: RunLog, *, acked: int = 0) -> None:
        """This instance drives the run (it created it, or resumed it with ``acked`` events in Redis): from now on it
        appends to it."""
        run_id = lg.info.run_id
        keys = (self._keys.meta(run_id).encode(), self._keys.events(run_id).encode())
        self.outboxes[run_id] = Outbox(lg, keys, acked=acked)

    def append(self, run_id: str, events: Sequence[Event]) -> int:
        """Queue ``events`` for the flusher; returns the sequence id the last of them will have."""
        box = self.outboxes.get(run_id)
        if box is None:
            raise RunClosedError(run_id)  # never ours, or ended elsewhere
        if box.finishing is not None:
            raise RunFinishedError(f"run {run_id} is finished")
        box.pending.extend(events)
        self._mark_due(box)
        return box.last_seq

    def finish(self, box: Outbox) -> asyncio.Future[None]:
        """Have the run's finish written after its pending events; resolved once it is (or is moot)."""
        if box.finishing is None:
            box.finishing = asyncio.get_running_loop().create_future()
            self._mark_due(box)
        return box.finishing

    def expose(self, box: Outbox) -> None:
        """Redis could not take the run's end in time: hand this instance's readers everything appended, finish
        included, under the ids the flusher will write them with (it goes on trying). The run has ended here."""
        lg = box.log
        unwritten = [*box.sending, *box.pending]
        lg.events.extend(unwritten[len(lg.events) - box.acked :])
        lg.info.last_seq = len(lg.events)
        lg.info.status = "finished"
        lg.info.finished_at = time.time()
        lg.expires = time.monotonic() + self._keep_finished_s
        logger.warning(
            "run %s: Redis has not taken its end; %d events served from this instance", lg.info.run_id, len(unwritten)
        )
        lg.wake()

    def recheck_all(self) -> None:
        """This instance's mark was gone (Redis restarted, or this instance was silent too long): have every run it
        drives checked by a flush, even an empty one, which restores the keys Redis lost and abandons the runs
        another instance ended meanwhile."""
        for box in self.outboxes.values():
            if box.unwritten or box.log.info.status == "running":
                self._mark_due(box)

    def forget(self, run_id: str) -> None:
        """The run's copy was dropped from this instance (it finished a while ago)."""
        self.outboxes.pop(run_id, None)

    def abandon(self, box: Outbox) -> None:
        """Stop writing a run (another instance ended it, or Redis refused its events) and let its manager stop.

        What was not written is dropped, and from now on the run is read from Redis like any other.
        """
        lg = box.log
        run_id = lg.info.run_id
        logger.warning("run %s: ended elsewhere; %d unwritten events dropped", run_id, len(box.pending))
        if self.outboxes.get(run_id) is box:
            del self.outboxes[run_id]
        box.pending = []
        box.sending = []
        lg.superseded = True
        lg.info.status = "finished"
        lg.expires = time.monotonic()
        box.release()
        lg.wake()
        if self.listener is not None:
            self.listener.run_lost(run_id)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for everything appended to be written (the store is closing)."""
        self._work.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def _mark_due(self, box: Outbox) -> None:
        run_id = box.log.info.run_id
        if self._due.get(run_id) is box:
            return  # due already: the flusher has been woken and will take it
        self._due[run_id] = box
        self._idle.clear()
        self._work.set()

    async def run(self) -> None:
        """The flusher: send what is due, wait for Redis, repeat; back off while Redis is unreachable."""
        backoff = _BACKOFF_MIN_S
        while True:
            if not self._due:
                self._idle.set()
            await self._work.wait()
            self._work.clear()
            if not self._due:
                continue
            batch, self._due = self._due, {}
            if await self._flush(list(batch.values())):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                self._work.set()
            else:
                backoff = _BACKOFF_MIN_S

    async def _flush(self, boxes: list[Outbox]) -> bool:
        """Send one batch and act on the replies; ``True`` when some of it must be sent again."""
        for box in boxes:
            if box.missing and await self._restore_keys(box):
                for again in boxes:
                    self._mark_due(again)
                return True
        sent = [self._take(box) for box in boxes]
        results = await self._send(sent)
        if any(isinstance(result, NoScriptError) for result in results):
            # Redis restarted or its scripts were flushed: load ours again (the batch is resent below).
            with contextlib.suppress(Exception):
                await self.load_script()
        retry = False
        for item, result in zip(sent, results, strict=True):
            retry |= self._settle(item, result)
        return retry

    async def _restore_keys(self, box: Outbox) -> bool:
        """Re-create a run's keys (meta, and the log Redis had acknowledged) under the same ids; ``True`` when
        Redis could not be reached (the flush is tried again later)."""
        lg = box.log
        meta = meta_of(lg.info, self.owner)
        meta["status"] = "running"  # a run whose finish is not written yet is running, whatever this copy says
        pairs = [item for kv in meta.items() for item in kv]
        try:
            restored = await self._restore(
                keys=[self._keys.meta(lg.info.run_id), self._keys.events(lg.info.run_id)],
                args=[self._running_ttl_ms, len(meta), *pairs, *map(dump_event, lg.events[: box.acked])],
            )
        except UNREACHABLE as exc:
            logger.warning("run %s: could not restore its keys in Redis: %s", lg.info.run_id, exc)
            return True
        box.missing = False
        if restored:
            logger.warning("run %s: Redis had lost its keys; restored %d events", lg.info.run_id, box.acked)
        return False

    @staticmethod
    def _take(box: Outbox) -> _Sent:
        # A batch that was not answered is sent again, whole, with what was appended since: the script skips the
        # ids Redis has, so a batch applied before its reply was lost is not written twice.
        box.sending.extend(box.pending)
        box.pending = []
        return _Sent(box, box.acked + 1, list(box.sending), box.finishing is not None)

    def _args(self, sent: list[_Sent]) -> list[bytes]:
        """The ``APPEND`` script's call for these runs' parts of a batch: keys, then arguments (``scripts.py``)."""
        args = [b"EVALSHA", self._append_sha, b"%d" % (2 * len(sent))]
        for item in sent:
            args += item.box.keys
        args += (b"%d" % self._ttl_ms, repr(time.time()).encode(), b"%d" % self._running_ttl_ms)
        for item in sent:
            args += (
                b"%d" % item.first,
                b"1" if item.finish else b"0",
                b"%d" % len(item.events),
                b"\n".join(map(dump_event, item.events)),
            )
        return args

    async def _send(self, sent: list[_Sent]) -> list[Any]:
        """One call of ``APPEND`` for every run of the batch: a reply per run (an exception when it failed)."""
        if self._line is None:
            return await self._send_per_slot(sent)
        try:
            return list(await self._line.call(pack(self._args(sent))))
        except _FAILED as exc:
            return [exc] * len(sent)

    async def _send_per_slot(self, sent: list[_Sent]) -> list[Any]:
        """On a cluster: one pipeline of ``APPEND`` calls, one per run. Each node's part ends with a ``WAIT`` for its
        replica; a run whose node's ``WAIT`` failed failed too."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for item in sent:  # EVALSHA by name (a str, which the cluster routes by): its pipeline blocks .evalsha()
                pipe.execute_command("EVALSHA", *self._args([item])[1:])
            metas = [self._keys.meta(item.box.log.info.run_id) for item in sent]
            owners, waited = (
                add_wait(self._redis, pipe, metas)
                if isinstance(self._redis, RedisCluster) and isinstance(pipe, ClusterPipeline)
                else ([], [])
            )
            try:
                replies = list(await pipe.execute(raise_on_error=False))
            except UNREACHABLE as exc:
                return [exc] * len(sent)
        results = [r[0] if isinstance(r, list) else r for r in replies[: len(sent)]]
        failed = {n: r for n, r in zip(waited, replies[len(sent) :], strict=True) if isinstance(r, Exception)}
        for i, owner in enumerate(owners):
            if owner in failed and not isinstance(results[i], Exception):
                results[i] = failed[owner]  # written, but maybe not to the replica: written again (idempotent)
        return results

    def _settle(self, item: _Sent, result: Any) -> bool:
        """Act on Redis's reply to one run's part of a batch; ``True`` when it must be sent again."""
        box = item.box
        if isinstance(result, ResponseError) and not isinstance(result, (NoScriptError, *CLUSTER_ERRORS)):
            return self._refused(box, result)
        if isinstance(result, Exception):
            logger.warning(
                "run %s: could not write %d events to Redis: %s", box.log.info.run_id, len(item.events), result
            )
            self._mark_due(box)  # the batch stays in ``sending``, sent again with what follows it
            return True
        self._acknowledged(item)
        return False

    def _refused(self, box: Outbox, result: ResponseError) -> bool:
        """The script refused a batch: restore lost keys, re-send lost events, or stop writing the run."""
        reason = str(result)
        if reason.startswith("MISSING"):
            box.missing = True  # restored before the batch is sent again
            self._mark_due(box)
            return True
        if reason.startswith("GAP") and self._rewind(box, reason):
            return True
        if not reason.startswith("CLOSED"):
            logger.error("run %s: Redis refused its events: %s", box.log.info.run_id, result)
        self.abandon(box)
        return False

    def _rewind(self, box: Outbox, reason: str) -> bool:
        """Redis has fewer of the run's events than it acknowledged (a master failed over before its replica had
        them): send them again, from the first one it lacks. ``False`` when that is not what happened."""
        expected = reason.split()
        if len(expected) < 3 or not expected[2].rstrip(",").isdigit():
            return False
        has = int(expected[2].rstrip(",")) - 1
        if has >= box.acked:
            return False
        logger.warning(
            "run %s: Redis lost events %d to %d; writing them again", box.log.info.run_id, has + 1, box.acked
        )
        box.sending[:0] = box.log.events[has : box.acked]
        box.acked = has
        self._mark_due(box)
        return True

    def _acknowledged(self, item: _Sent) -> None:
        box, lg = item.box, item.box.log
        box.acked = item.first - 1 + len(item.events)
        del box.sending[: len(item.events)]
        if len(lg.events) < box.acked:  # exposed runs have them already
            lg.events.extend(item.events[len(lg.events) - item.first + 1 :])
            lg.info.last_seq = len(lg.events)
        if item.finish and not box.pending:
            lg.info.status = "finished"
            lg.info.finished_at = time.time()
            lg.expires = time.monotonic() + self._keep_finished_s
            box.release()
        elif box.pending:
            self._mark_due(box)  # appended while this batch was in flight
        lg.wake()
