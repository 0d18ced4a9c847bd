"""Who a request acts as: bearer tokens mapped to user ids, or — without authentication — whoever it claims to be.

A ``UserResolver`` is ``async (request, claimed_user_id) -> user_id``; ``create_router(relay, resolve_user=...)``
takes your own (check a session cookie, a JWT, an API gateway's header...). Raise :class:`AuthError` to refuse a
request: every route answers 401 with ``WWW-Authenticate: Bearer``.

With tokens configured, the token alone decides the user: a ``user_id`` in the query or body is ignored, and a
run or conversation of another user is answered 404, exactly like one that does not exist.

``EventSource`` cannot send headers, so GET stream routes also accept ``?access_token=`` (RFC 6750 §2.3). The
trade-off: a token in a URL can end up in access logs, browser history and ``Referer`` headers. Prefer the
header (fetch-based clients, the Python client), give browsers short-lived or per-user tokens, and keep such URLs
out of logs at your proxy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from fastapi import HTTPException, Request

__all__ = ["AuthError", "BearerTokenAuth", "UserResolver", "anonymous_or_claimed", "load_tokens"]

# Given the request and the user id the client claims (body or query), return the user id to act as.
UserResolver = Callable[[Request, str | None], Awaitable[str]]


class AuthError(HTTPException):
    """The request is not authenticated. Answered 401 with ``WWW-Authenticate: Bearer`` and the project's error body."""

    def __init__(self, message: str = "a valid bearer token is required", *, code: str = "unauthorized") -> None:
        challenge = 'Bearer realm="tokenrelay"' if code == "unauthorized" else 'Bearer error="invalid_token"'
        super().__init__(401, {"code": code, "message": message}, headers={"www-authenticate": challenge})
        self.code = code
        self.message = message


async def anonymous_or_claimed(request: Request, claimed: str | None) -> str:
    """Without authentication the client names itself, as in the seed; ``anonymous`` when it does not."""
    return claimed or "anonymous"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class BearerTokenAuth:
    """Static bearer tokens → user ids.

    Tokens are kept only as SHA-256 digests and looked up by digest, so the lookup's timing says nothing about
    how much of a guessed token was right.
    """

    def __init__(self, tokens: Mapping[str, str], *, query_param: str = "access_token") -> None:
        if not tokens:
            raise ValueError("bearer authentication needs at least one token")
        self._users = {_digest(token): user for token, user in tokens.items()}
        self.query_param = query_param

    async def __call__(self, request: Request, claimed: str | None) -> str:
        token = self._token(request)
        if token is None:
            raise AuthError()
        user = self._users.get(_digest(token))
        if user is None:
            raise AuthError("the bearer token is not valid", code="invalid_token")
        return user

    def _token(self, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
        if request.method == "GET":
            return request.query_params.get(self.query_param) or None
        return None


def load_tokens(inline: Mapping[str, str], path: Path | None) -> dict[str, str]:
    """The configured tokens: ``inline`` plus those of a JSON file ``{"token": "user_id"}``."""
    tokens = dict(inline)
    if path is not None:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"auth tokens file {path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f'auth tokens file {path}: must be a JSON object {{"token": "user_id"}}')
        tokens.update(data)
    for token, user in tokens.items():
        if not token or not user:
            raise ValueError("auth tokens: tokens and user ids must not be empty")
    return tokens
