"""The shared run store: Redis Streams, so that any instance can serve any run's stream.

The parts, in the order an event meets them:

- ``layout`` — the keys: a run is a Stream of events whose entry ids *are* the sequence ids (``0-<seq>``), beside a
  meta hash (status, last seq, owner, viewers).
- ``writer`` — the owner's appends: one flusher per instance writes every run's pending events in one pipeline of
  ``APPEND`` script calls (``scripts``), the next batch as soon as the last is acknowledged.
- ``logs`` — what readers see: an instance's copy of a run holds only what Redis has acknowledged, so no client can
  hold an id another instance does not know.
- ``tails`` — runs driven elsewhere, followed by a few shared blocking ``XREAD`` s that wake every local reader.
- ``liveness`` — each instance's keep-alive mark; a quiet stream whose owner's mark expired is ended as
  ``interrupted``, once, by whichever instance notices first.
- ``inbox`` — cancel and "last viewer left" requests to a run's owner, wherever it runs.
- ``chat_runs`` — useChat's chat → run index, shared the same way.

Expiry. A finished run's keys expire ``ttl_s`` after it finished; a running run's keys carry a long safety TTL
(``running_ttl_s``), so a run nobody ended (every instance died) cannot stay forever.
"""

from tokenrelay._extras import missing_extra

try:
    import redis.asyncio  # noqa: F401  (checked here, before the modules that need it)
except ImportError as exc:
    raise missing_extra("the Redis run store (--store redis)", "redis", "redis", cause=exc) from None

from tokenrelay.stores.redis.chat_runs import RedisChatRunIndex
from tokenrelay.stores.redis.store import RedisRunStore

__all__ = ["RedisChatRunIndex", "RedisRunStore"]
