"""Reading a request body, cheaply and defensively: JSON only, bounded in size, time and depth.

The size limit is enforced while reading (a declared ``Content-Length`` over it is refused before a byte of the
body is read; a chunked body is cut off as soon as it passes the limit), so a huge body costs the server nothing
but the bytes it refused. Authentication is the caller's, before it reads (see ``pipeline``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from starlette.requests import ClientDisconnect, Request

from tokenrelay.errors import TokenrelayError

__all__ = [
    "MAX_JSON_DEPTH",
    "BodyError",
    "BodyProblem",
    "is_json_media_type",
    "read_json_body",
]

MAX_JSON_DEPTH = 64
"""The deepest nesting of objects and arrays a request body may have (none of tokenrelay's needs more than 4)."""

BodyProblem = Literal["too_large", "invalid_json", "not_object", "too_deep", "media_type", "incomplete", "timeout"]


class BodyError(TokenrelayError):
    """The request body could not be read as a JSON object (each surface has its own status for each ``problem``)."""

    def __init__(self, problem: BodyProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message

    @property
    def closes(self) -> bool:
        """Whether the connection should close after the answer: what is left of the body is not worth reading."""
        return self.problem in ("too_large", "incomplete", "timeout")


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, whatever its parameters."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json_body(request: Request, limit: int, *, timeout_s: float) -> dict[str, Any]:
    """The body as a JSON object: refused unless JSON, over ``limit`` bytes, slower than ``timeout_s``, too deep."""
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise BodyError("media_type", "body: must be JSON (content-type: application/json)")
    raw = await _read(request, limit, timeout_s)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BodyError("too_deep", f"body: nested deeper than {MAX_JSON_DEPTH}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BodyError("invalid_json", f"body: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BodyError("not_object", "body: must be a JSON object")
    if not _within_depth(data, MAX_JSON_DEPTH):
        raise BodyError("too_deep", f"body: nested deeper than {MAX_JSON_DEPTH}")
    return data


async def _read(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError("invalid_json", "content-length: must be a number of bytes")
        if int(declared) > limit:
            raise BodyError("too_large", f"request body: over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyError("too_large", f"request body: over {limit} bytes")
    except TimeoutError:
        raise BodyError("timeout", f"request body: not received within {timeout_s:g} s") from None
    except ClientDisconnect:
        # The client left halfway through its body: an ordinary end, answered to nobody.
        raise BodyError("incomplete", "request body: the client closed the connection before its end") from None
    return bytes(body)


def _within_depth(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return False
                stack.append((child, depth + 1))
    return True
