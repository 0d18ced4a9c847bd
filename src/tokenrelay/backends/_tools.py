"""The one rule for a ``tool`` message, shared by every provider's request.

tokenrelay's history keeps what a tool returned as text, with no call for it to answer; a provider that takes tool
results wants them tied to the call that asked for them. So a ``tool`` message is passed on as the user's text,
labelled, rather than refused by the provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tokenrelay.messages import Message

__all__ = ["TextRole", "text_turn", "text_turns"]

TextRole = Literal["system", "user", "assistant"]


def text_turn(message: Message) -> tuple[TextRole, str]:
    """``message`` as a role and a text that every provider takes: a tool's output becomes labelled user text."""
    if message.role == "tool":
        return "user", f"[tool output]\n{message.content}"
    return message.role, message.content


def text_turns(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation as ``{"role", "content"}`` messages (OpenAI's shape), a tool's output as user text."""
    return [{"role": role, "content": content} for role, content in map(text_turn, messages)]
