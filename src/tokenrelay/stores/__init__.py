"""Run stores: in memory for one instance; Redis Streams for many."""

from tokenrelay.stores.base import RunInfo, RunStatus, RunStore, StoredEvent, StoreListener
from tokenrelay.stores.chat_runs import ChatRunIndex, MemoryChatRunIndex
from tokenrelay.stores.memory import MemoryRunStore

__all__ = [
    "ChatRunIndex",
    "MemoryChatRunIndex",
    "MemoryRunStore",
    "RunInfo",
    "RunStatus",
    "RunStore",
    "StoreListener",
    "StoredEvent",
]
