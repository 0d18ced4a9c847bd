"""Seed-protocol frames as the server writes them, for tests that feed the client bytes without a server."""

from __future__ import annotations

import json
from typing import Any

from tokenrelay.sse import encode


def frame(id: int, data: dict[str, Any]) -> bytes:
    return encode(json.dumps(data), id=id).encode()


def deltas(first: int, *texts: str) -> bytes:
    """``{"delta"}`` frames with ids from ``first``."""
    return b"".join(frame(first + i, {"delta": text}) for i, text in enumerate(texts))


def done(id: int, **fields: Any) -> bytes:
    return frame(id, {"done": True, "finish_reason": "stop", **fields})
