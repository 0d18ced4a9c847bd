"""Approvals in Redis: runs paused for a person's answer, kept by Redis alone, and resumed by whoever answers last.

A paused run is ``waiting`` in its meta hash with no owner: no instance drives it, so liveness never takes it for
lost (only ``running`` runs are judged), and its keys are kept until its approvals expire plus the finished-run TTL.
Beside its meta and events, under the same ``{run_id}`` hash tag (so every script is single-slot, Cluster-safe):

- ``P run:{id}:approval`` — a hash: ``suspension`` (the backend's state and the calls, as JSON), ``calls`` (the
  waiting call ids, JSON), ``expires_at``; and per answered call ``d:<call>`` (``1``/``0``) and ``r:<call>`` (its
  ``ToolApprovalResponse``), kept while the run is, so the same answer again is one.
- ``P approvals:deadlines`` — a sorted set of waiting runs by deadline, on its own (never in a script with a run's
  keys): each instance's sweep takes the runs past theirs, and the ``EXPIRE`` script ends each at most once.

``RECORD`` checks and records one answer and appends its response, atomically; the answer that completes the calls
also flips the run to ``running`` with the answering instance as its owner — of concurrent last answers, on any
instances, exactly one wins. That instance then loads the log and drives the run on under the next ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from tokenrelay.events import FinishEvent, RunPaused, StoredEvent, ToolApprovalRequest, ToolApprovalResponse
from tokenrelay.stores.base import DecisionResult, RunInfo, Suspension
from tokenrelay.stores.memory import expired_error
from tokenrelay.stores.redis.cluster import UNREACHABLE
from tokenrelay.stores.redis.layout import decode, dump_event, entry_event, info_from_meta
from tokenrelay.stores.redis.logs import RunLog

if TYPE_CHECKING:
    from tokenrelay.stores.redis.store import RedisRunStore

__all__ = ["CANCEL", "EXPIRE", "RECORD", "SUSPEND", "Approvals"]

logger = logging.getLogger("tokenrelay.stores.redis")

_FLUSH_S = 10.0  # how long a pause waits for the run's events to be written before it
_FLUSH_POLL_S = 0.005

# KEYS: meta, events, approval. ARGV: paused JSON, suspension JSON, calls JSON, expires_at, keep-until (unix ms),
# owner. Appends the pause after the log and parks the run; refuses (CLOSED) a run not running here.
SUSPEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[6] then
  return redis.error_reply('CLOSED run is not running here')
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0') + 1
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', ARGV[1])
redis.call('HSET', KEYS[1], 'last_seq', seq, 'status', 'waiting', 'owner', '')
redis.call('HSET', KEYS[3], 'suspension', ARGV[2], 'calls', ARGV[3], 'expires_at', ARGV[4])
for i = 1, 3 do
  redis.call('PEXPIREAT', KEYS[i], ARGV[5])
end
return seq
"""

# KEYS: meta, events, approval. ARGV: call id, approved (1/0), response JSON, now, owner, running ttl ms.
# Returns {status} or, for the winner, {'resume', suspension JSON, response JSON...} (in the calls' order).
RECORD = """
local prior = redis.call('HGET', KEYS[3], 'd:' .. ARGV[1])
if prior then
  if prior == ARGV[2] then return {'same'} end
  return {'conflict'}
end
local calls = redis.call('HGET', KEYS[3], 'calls')
if redis.call('HGET', KEYS[1], 'status') ~= 'waiting' or not calls then
  if redis.call('HGET', KEYS[3], 'expired') == '1' then return {'expired'} end
  return {'unknown'}
end
calls = cjson.decode(calls)
local found = false
for _, id in ipairs(calls) do
  if id == ARGV[1] then found = true end
end
if not found then return {'unknown'} end
if tonumber(redis.call('HGET', KEYS[3], 'expires_at')) <= tonumber(ARGV[4]) then return {'due'} end
redis.call('HSET', KEYS[3], 'd:' .. ARGV[1], ARGV[2], 'r:' .. ARGV[1], ARGV[3])
local seq = tonumber(redis.call('HGET', KEYS[1], 'last_seq')) + 1
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', ARGV[3])
redis.call('HSET', KEYS[1], 'last_seq', seq)
local out = {'resume', redis.call('HGET', KEYS[3], 'suspension')}
for _, id in ipairs(calls) do
  local answer = redis.call('HGET', KEYS[3], 'r:' .. id)
  if not answer then return {'recorded'} end
  table.insert(out, answer)
end
redis.call('HSET', KEYS[1], 'status', 'running', 'owner', ARGV[5])
redis.call('HDEL', KEYS[3], 'suspension', 'calls')
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
return out
"""

# KEYS: meta, events, approval. ARGV: error JSON, finish JSON, now, finished ttl ms. Ends a waiting run past its
# deadline, once: the last seq, or 0 (not waiting, or not due).
EXPIRE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'waiting' then return 0 end
if tonumber(redis.call('HGET', KEYS[3], 'expires_at') or '0') > tonumber(ARGV[3]) then return 0 end
local seq = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'e', ARGV[1])
redis.call('XADD', KEYS[2], '0-' .. (seq + 2), 'e', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'finished', 'last_seq', seq + 2, 'finished_at', ARGV[3])
redis.call('HSET', KEYS[3], 'expired', '1')
redis.call('HDEL', KEYS[3], 'suspension', 'calls')
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
end
return seq + 2
"""

# KEYS: meta, events, approval. ARGV: finish JSON, now, finished ttl ms. Ends a waiting run at once (a Stop), once:
# the last seq, or 0 (not waiting).
CANCEL = """
if redis.call('HGET', KEYS[1], 'status') ~= 'waiting' then return 0 end
local seq = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0') + 1
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'finished', 'last_seq', seq, 'finished_at', ARGV[2])
redis.call('HDEL', KEYS[3], 'suspension', 'calls')
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return seq
"""


def _suspension_json(suspension: Suspension) -> str:
    calls = [[c.call_id, c.name, c.arguments] for c in suspension.calls]
    data = {"state": suspension.state, "backend": suspension.backend, "expires_at": suspension.expires_at}
    return json.dumps({**data, "calls": calls})


def _suspension(raw: Any) -> Suspension:
    data = json.loads(decode(raw))
    calls = tuple(ToolApprovalRequest(str(c[0]), str(c[1]), str(c[2])) for c in data["calls"])
    return Suspension(str(data["state"]), str(data["backend"]), float(data["expires_at"]), calls)


def _response(raw: Any) -> ToolApprovalResponse:
    event = entry_event({b"e": raw if isinstance(raw, bytes) else str(raw).encode()})
    assert isinstance(event, ToolApprovalResponse)
    return event


class Approvals:
    """The approval side of one :class:`~tokenrelay.stores.redis.store.RedisRunStore` (it reaches into the store's
    parts: its client, keys, local copies, writer and listener)."""

    def __init__(self, store: RedisRunStore, *, sweep_s: float) -> None:
        self._store = store
        client = store._redis
        self._suspend = client.register_script(SUSPEND)
        self._record = client.register_script(RECORD)
        self._expire = client.register_script(EXPIRE)
        self._cancel = client.register_script(CANCEL)
        self._deadlines = f"{store.prefix}approvals:deadlines"
        self._sweep_s = sweep_s

    def _keys(self, run_id: str) -> list[str]:
        keys = self._store._keys
        return [keys.meta(run_id), keys.events(run_id), f"{self._store.prefix}run:{{{run_id}}}:approval"]

    async def suspend(self, run_id: str, suspension: Suspension) -> int:
        """Write the run's events, then park it (see :data:`SUSPEND`); this instance lets go of it."""
        store = self._store
        box = store._writer.outboxes.get(run_id)
        for _ in range(int(_FLUSH_S / _FLUSH_POLL_S)):  # the writer acknowledges within a round trip or two
            if box is None or not (box.sending or box.pending):
                break
            await asyncio.sleep(_FLUSH_POLL_S)
        else:
            raise TimeoutError(f"run {run_id}: its events were not written in {_FLUSH_S:.0f}s")
        keep_until_ms = int((suspension.expires_at + store.ttl_s) * 1000)
        calls = json.dumps([c.call_id for c in suspension.calls])
        args: list[str | int] = [
            dump_event(RunPaused(suspension.expires_at)).decode(),
            _suspension_json(suspension),
            calls,
        ]
        async with store._reachable():
            seq = int(
                await self._suspend(
                    keys=self._keys(run_id),
                    args=[*args, repr(suspension.expires_at), keep_until_ms, store.instance_id],
                )
            )
            await store._redis.zadd(self._deadlines, {run_id: suspension.expires_at})
        store._writer.forget(run_id)
        lg = store._logs.get(run_id)
        if lg is not None:
            lg.superseded = True  # read from Redis from now on, like a run driven elsewhere
            lg.wake()
        return seq

    async def suspension(self, run_id: str) -> Suspension | None:
        async with self._store._reachable():
            raw = await self._store._redis.hget(self._keys(run_id)[2], "suspension")
        return _suspension(raw) if raw else None

    async def record(self, run_id: str, decision: ToolApprovalResponse) -> DecisionResult:
        store = self._store
        args = [decision.call_id, "1" if decision.approved else "0", dump_event(decision), repr(time.time())]
        async with store._reachable():
            reply = await self._record(
                keys=self._keys(run_id), args=[*args, store.instance_id, int(store.running_ttl_s * 1000)]
            )
        status = decode(reply[0])
        if status == "due":
            await self._end_expired(run_id)
            return DecisionResult("expired")
        if status != "resume":
            return DecisionResult(status)  # type: ignore[arg-type]  # one of the script's own answers
        suspension = _suspension(reply[1])
        await self._take_over(run_id)
        return DecisionResult("resume", suspension, tuple(_response(raw) for raw in reply[2:]))

    async def _take_over(self, run_id: str) -> None:
        """This instance won the run: its log, loaded whole, becomes the copy it appends to."""
        store = self._store
        async with store._reachable(), store._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(store._keys.meta(run_id))
            pipe.xrange(store._keys.events(run_id), "-", "+")
            raw, entries = await pipe.execute()
        with_owner = info_from_meta(run_id, raw)
        info = with_owner[0]
        info.status = "running"
        lg = RunLog(info, store.instance_id, events=[entry_event(fields) for _, fields in entries])
        lg.touched = time.monotonic()
        info.last_seq = len(lg.events)
        earlier = store._logs.get(run_id)
        if earlier is not None:
            earlier.superseded = True  # a tail reader may still hold it: it lets go once it sees it finished
            earlier.info.status = "finished"
            earlier.wake()
        store._logs[run_id] = lg
        store._writer.own(lg, acked=len(lg.events))
        with contextlib.suppress(*UNREACHABLE):
            await store._redis.zrem(self._deadlines, run_id)  # else the sweep finds it not waiting, and drops it

    async def cancel(self, run_id: str) -> bool:
        """End a waiting run at once (see :data:`CANCEL`); history is told by the instance that did."""
        store = self._store
        args: list[bytes | str | int] = [
            dump_event(FinishEvent("cancelled")),
            repr(time.time()),
            int(store.ttl_s * 1000),
        ]
        async with store._reachable():
            last = int(await self._cancel(keys=self._keys(run_id), args=args))
        if not last:
            return False
        logger.info("run %s: cancelled while it waited for approval; ended", run_id)
        with contextlib.suppress(*UNREACHABLE):
            await store._redis.zrem(self._deadlines, run_id)
        await self._tell_history(run_id)
        return True

    async def _end_expired(self, run_id: str) -> bool:
        """End a waiting run past its deadline (if no instance has); history is told by the one that did."""
        store = self._store
        error, finish = expired_error(), FinishEvent("error")
        args: list[bytes | str | int] = [
            dump_event(error),
            dump_event(finish),
            repr(time.time()),
            int(store.ttl_s * 1000),
        ]
        async with store._reachable():
            last = int(await self._expire(keys=self._keys(run_id), args=args))
        if not last:
            return False
        logger.info("run %s: its approvals expired; ended", run_id)
        await self._tell_history(run_id)
        return True

    async def _tell_history(self, run_id: str) -> None:
        """Give the listener (the history) the whole log of a waiting run this instance just ended."""
        store = self._store
        if store._listener is not None:
            async with store._reachable(), store._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(store._keys.meta(run_id))
                pipe.xrange(store._keys.events(run_id), "-", "+")
                raw, entries = await pipe.execute()
            info: RunInfo = info_from_meta(run_id, raw)[0]
            events = [StoredEvent(i, entry_event(fields)) for i, (_, fields) in enumerate(entries, 1)]
            await store._listener.run_interrupted(info, events)

    async def sweep(self) -> None:
        """For ever: end the waiting runs past their deadline, whichever instance notices first."""
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                due = await self._store._redis.zrangebyscore(self._deadlines, "-inf", time.time(), start=0, num=100)
                for raw in due:
                    run_id = decode(raw)
                    await self._end_expired(run_id)
                    await self._store._redis.zrem(self._deadlines, run_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("cannot sweep expired approvals in Redis: %s", exc)
