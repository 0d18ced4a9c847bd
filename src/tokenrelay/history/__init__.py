"""Conversation history: what earlier turns a follow-up carries to the model.

``MemoryHistory`` keeps it in the process; ``tokenrelay.history.sql.SQLHistory`` in SQLite or PostgreSQL.
"""

from tokenrelay.history.base import Conversation, History, MessageStatus, StoredMessage
from tokenrelay.history.memory import MemoryHistory

__all__ = ["Conversation", "History", "MemoryHistory", "MessageStatus", "StoredMessage"]
