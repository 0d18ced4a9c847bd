"""Run stores: in memory for one instance; Redis Streams for many."""

from tokenrelay.stores.base import RunInfo, RunStatus, RunStore, StoredEvent
from tokenrelay.stores.memory import MemoryRunStore

__all__ = ["MemoryRunStore", "RunInfo", "RunStatus", "RunStore", "StoredEvent"]
