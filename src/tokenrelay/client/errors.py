"""What the client raises: every failure is a :class:`~tokenrelay.errors.TokenrelayError`, the library's one root.

A refused request (:class:`TokenrelayHTTPError`), a server that cannot be reached (:class:`TokenrelayConnectionError`)
and a stream that could not be completed (:class:`IncompleteStreamError`) are caught together with
``except TokenrelayError``, apart from the caller's own errors and from httpx's.
"""

from __future__ import annotations

import json

import httpx

from tokenrelay.errors import TokenrelayError

__all__ = [
    "IncompleteStreamError",
    "TokenrelayConnectionError",
    "TokenrelayError",
    "TokenrelayHTTPError",
    "http_error",
    "unreachable",
]


class TokenrelayHTTPError(TokenrelayError):
    """The server refused the request (4xx / 5xx) before any stream started."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"HTTP {status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field


class TokenrelayConnectionError(TokenrelayError):
    """The server could not be reached."""


class IncompleteStreamError(TokenrelayError):
    """The stream ended without its done frame, and resuming it did not help (retries exhausted, run expired)."""

    def __init__(self, last_event_id: str, text: str) -> None:
        super().__init__(f"the stream ended before its done frame (last event id {last_event_id or 'none'})")
        self.last_event_id = last_event_id
        self.text = text


def http_error(response: httpx.Response, body: bytes) -> TokenrelayHTTPError:
    """The error for a refused request, with the server's own code, message and field when it sent them."""
    try:
        err = json.loads(body)["error"]
        return TokenrelayHTTPError(response.status_code, err["code"], err["message"], err.get("field"))
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")[:500]
        return TokenrelayHTTPError(response.status_code, "http_error", text or response.reason_phrase)


def unreachable(base_url: object, exc: Exception) -> TokenrelayConnectionError:
    """The error for a connection that could not be opened (the caller chains ``exc`` as its cause)."""
    return TokenrelayConnectionError(f"cannot reach {base_url}: {exc}")
