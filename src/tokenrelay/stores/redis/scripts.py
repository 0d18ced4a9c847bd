"""The store's Lua scripts: what must happen atomically in Redis.

Each script touches one run's keys only (``KEYS`` are that run's meta hash and events stream, which share a hash tag),
so they are safe on Redis Cluster.
"""

from __future__ import annotations

__all__ = ["APPEND", "INTERRUPT", "VIEWERS"]

# The owner's batch of appends (and the run's finish, when it is the last batch).
# KEYS: meta, events. ARGV: first seq, finish ("1"/"0"), finished ttl ms, now, running ttl ms, event JSON...
# Refuses (``CLOSED``) a run that is no longer running, and is idempotent on retry: a batch already applied is
# acknowledged again rather than written twice. Returns the last seq.
APPEND = """
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
