"""Connecting to Redis — one server, or a Redis Cluster — and what the store's parts must know about a cluster.

On a cluster every command the store sends touches one hash slot: a run's keys share the ``{run_id}`` hash tag, so
its scripts and transactions are single-slot; pipelines spanning runs are split per node by the client; the tail
readers' blocking ``XREAD`` s cover the runs of one slot each (``tails.py``), with a wake-up stream tagged into
that slot. Two things differ from one server:

- Errors a cluster answers while it moves or fails over a slot (``CLUSTERDOWN``, ``TRYAGAIN``, ``MOVED``/``ASK``,
  ``READONLY``, ``MASTERDOWN``) are transient: callers retry them as they retry a dropped connection.
- An acknowledged append must survive its master's failover. Replication is asynchronous, so the writer follows
  each node's part of a batch with ``WAIT 1`` on the same connection (:func:`add_wait`): a batch counts as written
  once the slot's replica has it too, and a replica promoted after the master died has every acknowledged event.
  A master with no replica (its replica was promoted and the old master has not come back) is not waited for.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import AskError, ClusterDownError, ReadOnlyError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["CLUSTER_ERRORS", "UNREACHABLE", "Client", "add_wait", "check_prefix", "connect", "is_cluster"]

Client: TypeAlias = "aioredis.Redis | RedisCluster"

# Answers of a cluster that is moving or failing over a slot (and the client's own "this slot has no node now"):
# the command is sent again, later.
CLUSTER_ERRORS: tuple[type[Exception], ...] = (
    ClusterDownError,
    TryAgainError,
    AskError,
    ReadOnlyError,
    RedisClusterException,
)
# What a call to Redis raises when Redis (or the slot's node) cannot answer now. AttributeError too: redis-py's
# cluster client, retrying a pipeline during a failover, closes every node's connections, also those other tasks are
# using, which then fail inside the client ("'NoneType' object has no attribute 'writelines'").
UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    AttributeError,
    *CLUSTER_ERRORS,
)

# redis-py's cluster client has no blocking pool: past its bound a command fails at once. The bound is per node and
# a tail reader holds a connection while its XREAD blocks (one per followed slot), so it is set well above a burst.
_CLUSTER_NODE_CONNECTIONS = 10_000
WAIT_MS = 1_000  # the longest a batch waits for its slot's replica


def connect(url: str, *, cluster: bool, max_connections: int, socket_timeout_s: float) -> Client:
    """A client of ``url``: with ``cluster``, of the Redis Cluster that node belongs to (any node will do).

    One server: a blocking pool, so a burst of readers waits for a connection instead of failing. Few are held for
    long (one per tail reader, one for the inbox), so the bound is on bursts of short commands.
    """
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max(max_connections, _CLUSTER_NODE_CONNECTIONS),
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
    )
    return aioredis.Redis(connection_pool=pool)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def check_prefix(prefix: str) -> None:
    """A key prefix with a brace would become the hash tag of every key (all runs in one slot): refused."""
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"redis prefix {prefix!r}: must not contain '{{' or '}}' (they would be its hash tag)")


def add_wait(client: RedisCluster, pipe: ClusterPipeline, keys: list[str]) -> tuple[list[str | None], list[str]]:
    """Queue ``WAIT 1`` on each node that owns one of ``keys`` and has a replica, after what is queued for it.

    Returns the name of the node waited for per key (``None``: not waited for), and the names in the order of the
    ``WAIT`` replies, which follow the pipeline's other replies."""
    owners: list[str | None] = []
    nodes: dict[str, ClusterNode] = {}
    for key in keys:
        slot_nodes = client.nodes_manager.slots_cache.get(client.keyslot(key)) or []
        if len(slot_nodes) > 1:  # a master and at least one replica
            nodes.setdefault(slot_nodes[0].name, slot_nodes[0])
            owners.append(slot_nodes[0].name)
        else:
            owners.append(None)
    for node in nodes.values():
        pipe.execute_command("WAIT", 1, WAIT_MS, target_nodes=node)
    return owners, list(nodes)
