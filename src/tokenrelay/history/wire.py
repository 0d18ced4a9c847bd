"""A conversation's messages as the conversations API returns them (``GET /api/conversations/{id}/messages``).

Each message: ``role``, ``content`` (its text), ``status``, ``run_id``, ``error_code``, ``output_tokens``,
``created_at`` and ``parts``, the message as it was made, in order (a message stored with none, a question for
instance, has its text as its one part)::

    {"type": "text", "text": "..."}
    {"type": "reasoning", "text": "..."}
    {"type": "tool-call", "call_id": "...", "name": "...", "arguments": "{...}"}   (JSON text, as the model wrote it)
    {"type": "tool-result", "call_id": "...", "output": "...", "is_error": false}
    {"type": "metadata", "data": {...}}
    {"type": "usage", "input_tokens": 12, "output_tokens": 34}
    {"type": "finish", "reason": "stop"}
    {"type": "error", "code": "...", "message": "...", "retryable": false}

Text is returned exactly as stored: a lone surrogate, which UTF-8 cannot carry, is sent as its JSON ``\\uXXXX``
escape (which ``JSON.parse`` and ``json.loads`` turn back into the same string).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tokenrelay.history.base import StoredMessage
from tokenrelay.messages import TextPart, part_to_dict

__all__ = ["json_body", "message_json", "messages_body"]


def message_json(message: StoredMessage) -> dict[str, Any]:
    """One message of the API's answer."""
    parts = message.parts or ((TextPart(message.content),) if message.content else ())
    return {
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "run_id": message.run_id,
        "error_code": message.error_code,
        "output_tokens": message.output_tokens,
        "created_at": message.created_at,
        "parts": [part_to_dict(p) for p in parts],
    }


def json_body(value: Any) -> bytes:
    """``value`` as UTF-8 JSON; escaped to ASCII only when it holds a lone surrogate, which UTF-8 cannot carry."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def messages_body(conversation_id: str, messages: Sequence[StoredMessage]) -> bytes:
    """The body of ``GET /api/conversations/{id}/messages``."""
    return json_body({"conversation_id": conversation_id, "messages": [message_json(m) for m in messages]})
