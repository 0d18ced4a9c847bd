"""JSON for the wire: orjson's speed, with the standard library's tolerance."""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps"]


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates (text a model can emit mid-character); the standard library escapes them.
        return json.dumps(value, separators=(",", ":")).encode()
