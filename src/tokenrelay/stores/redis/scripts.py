"""The store's Lua scripts: what must happen atomically in Redis.

Each script touches one run's keys only (``KEYS`` are that run's meta hash and events stream, which share a hash tag),
so they are safe on Redis Cluster.
"""

from __future__ import annotations

__all__ = ["APPEND", "INTERRUPT", "RESTORE", "VIEWERS"]

# The owner's batch of appends for one or more runs (and a run's finish, when it is its last batch).
# KEYS: meta and events of each run, in pairs. ARGV: finished ttl ms, now, running ttl ms; then for each run: its
# first seq, finish ("1"/"0"), the number of events n, and the n events' JSON joined by newlines (one argument: JSON
# has no raw newline, and the owner packs one argument per run rather than one per event). Returns, for each run,
# its last seq or its refusal (an error in the reply's array). On one Redis server the writer sends every run of a
# batch in one call; on a cluster one call per run (one slot).
# Idempotent by sequence id: the owner numbers events itself, and ids the log has already are skipped, so a batch
# retried after a timeout (applied or not, whole or merged with later events) neither duplicates nor leaves a gap;
# only a batch that starts past the log's end is refused (``GAP``). Refuses (``CLOSED``) a run that another
# instance ended, and (``MISSING``) a run whose keys are gone (Redis restarted empty, or they expired): the owner
# still has the log and restores it (``RESTORE``).
APPEND = """
local function append(meta, events, first, finish, n, blob)
  local status = redis.call('HGET', meta, 'status')
  if not status then
    return redis.error_reply('MISSING run keys are gone')
  end
  local last = first + n - 1
  local current = tonumber(redis.call('HGET', meta, 'last_seq') or '0')
  if status ~= 'running' then
    if status == 'finished' and finish == '1' and current == last
       and redis.call('HGET', meta, 'interrupted') ~= '1' then
      return last -- this finishing batch was applied already: a retry after a lost reply
    end
    return redis.error_reply('CLOSED run is not running')
  end
  if first > current + 1 then
    return redis.error_reply('GAP expected ' .. (current + 1) .. ', got ' .. first)
  end
  local from = 1
  for seq = first, last do
    local stop = string.find(blob, '\\n', from, true) or (#blob + 1)
    if seq > current then
      redis.call('XADD', events, '0-' .. seq, 'e', string.sub(blob, from, stop - 1))
    end
    from = stop + 1
  end
  if last > current then
    redis.call('HSET', meta, 'last_seq', last)
    if current == 0 then
      redis.call('PEXPIRE', events, ARGV[3])
    end
  else
    last = current
  end
  if finish == '1' then
    redis.call('HSET', meta, 'status', 'finished', 'finished_at', ARGV[2])
    redis.call('PEXPIRE', meta, ARGV[1])
    redis.call('PEXPIRE', events, ARGV[1])
  end
  return last
end

local out = {}
for r = 1, #KEYS / 2 do
  local a = 4 * r
  out[r] = append(KEYS[2 * r - 1], KEYS[2 * r], tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3])
end
return out
"""

# Re-creates a running run's keys from its owner's copy, when they are gone (Redis restarted empty): the meta hash
# and the log so far, under the same ids. Does nothing when the meta hash exists. KEYS: meta, events. ARGV: running
# ttl ms, the number of meta fields n, n field/value pairs, then event JSON... Returns 1 when it restored, else 0.
RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local n = tonumber(ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))
local seq = 0
for i = 3 + 2 * n, #ARGV do
  seq = seq + 1
  redis.call('XADD', KEYS[2], '0-' .. seq, 'e', ARGV[i])
end
redis.call('HSET', KEYS[1], 'last_seq', seq)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if seq > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
"""

# Ends a run whose owner is dead with an error and a finish, once, whoever is first.
# KEYS: meta, events. ARGV: error JSON, finish JSON, finished ttl ms, now. Returns the last seq, or 0 if it was
# not running any more (someone else ended it first).
INTERRUPT = """
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

# Counts a viewer in or out, and says who owns the run and whether it still runs (so a last viewer leaving on
# another instance can tell the owner). KEYS: meta. ARGV: delta. Never creates the hash of an expired run.
VIEWERS = """
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
