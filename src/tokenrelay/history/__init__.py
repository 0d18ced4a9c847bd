"""Conversation history: what earlier turns a follow-up carries to the model."""

from tokenrelay.history.base import History, MessageStatus, StoredMessage
from tokenrelay.history.memory import MemoryHistory

__all__ = ["History", "MemoryHistory", "MessageStatus", "StoredMessage"]
