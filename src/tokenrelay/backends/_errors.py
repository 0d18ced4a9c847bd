"""Upstream failures, named once: every vendor SDK's exceptions become a :class:`BackendError` at the boundary.

The OpenAI and Anthropic SDKs share one exception layout (``APIStatusError`` with ``status_code``, ``response`` and
``body``; ``APIConnectionError``; ``APITimeoutError``), so one mapping serves both. SDKs are looked up in
``sys.modules`` rather than imported: an exception can only come from an SDK that is already loaded, and this
module must not pull in an optional extra by itself.

What the end user sees is short: a code, what happened in a few words, whether trying again may help, and the wait
the upstream asked for. What the upstream said (its error body, which can hold a server's file paths and line
numbers, an echo of the request or part of a key), the exception's own text and the host are logged, with the run
they concern, and never put in the message. ``retryable`` is true only for what can succeed unchanged: a rate limit,
an overload, a timeout, a cut connection, a server error (5xx); never for a request the upstream refused (4xx: a
validation failure stays one however often it is sent).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from tokenrelay.backends.base import BackendError

__all__ = ["in_stream_error", "refused_requests_are_final", "to_backend_error", "upstream_errors"]

log = logging.getLogger("tokenrelay.backends")

# A server that fails a request's validation may still answer 500 (llama.cpp's server does, with pydantic's
# "1 validation error" and its own file and line): the request was refused, and sending it again fails again.
_VALIDATION = re.compile(r"\bvalidation errors?\b", re.IGNORECASE)


async def refused_requests_are_final(response: Any) -> None:
    """An HTTP client's response hook: a 5xx whose body is a validation failure is marked ``x-should-retry:
    false``, the header by which the vendor SDKs' own retries are told not to send it again."""
    if response.status_code >= 500:
        await response.aread()
        if _VALIDATION.search(response.text[:4000]):
            response.headers["x-should-retry"] = "false"


class upstream_errors:
    """Re-raise what the SDK raised as a :class:`BackendError`; cancellation and unknown errors pass through.

    A class rather than a ``@contextmanager``: it is held for a stream's whole length, and a generator-based one
    keeps a generator, its frame and its wrapper alive for as long.
    """

    __slots__ = ("provider",)

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, BackendError) or not isinstance(exc, Exception):
            return
        mapped = to_backend_error(exc, self.provider)
        if mapped is None:
            return
        raise mapped from exc


def to_backend_error(exc: BaseException, provider: str) -> BackendError | None:
    """The :class:`BackendError` for an SDK exception, or ``None`` when it is not one this module knows."""
    for sdk_name in ("openai", "anthropic"):
        sdk: Any = sys.modules.get(sdk_name)
        if sdk is None:
            continue
        if isinstance(exc, sdk.APIStatusError):
            headers = getattr(exc.response, "headers", {})
            return _from_status(provider, exc.status_code, _error_type(exc), _raw_body(exc), _retry_after(headers))
        if isinstance(exc, sdk.APITimeoutError):
            _log_failure(provider, "timeout", f"the request to {_host(exc)} timed out")
            return BackendError("timeout", f"{provider}: the upstream request timed out", retryable=True)
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f": {type(cause).__name__}: {cause}" if cause is not None and str(cause) else ""
            return _connection_error(provider, f"the connection to {_host(exc)} failed or was cut{why}")
        if isinstance(exc, sdk.APIError):
            # An error event inside a 200 stream (OpenAI's ``{"error": {...}}`` data): no status, only a type.
            return in_stream_error(provider, _error_type(exc), _raw_body(exc))
    for http_name in ("httpx2", "httpx"):
        # Some SDKs let a transport error out of a stream unwrapped (a connection cut mid-body).
        http: Any = sys.modules.get(http_name)
        if http is None:
            continue
        if isinstance(exc, http.TimeoutException):
            _log_failure(provider, "timeout", f"{_host(exc)} stopped answering: {type(exc).__name__}: {exc}")
            return BackendError("timeout", f"{provider}: the upstream server stopped answering", retryable=True)
        if isinstance(exc, http.TransportError):
            return _connection_error(
                provider, f"the connection to {_host(exc)} failed or was cut: {type(exc).__name__}: {exc}"
            )
    agents: Any = sys.modules.get("agents")
    if agents is not None and isinstance(exc, agents.AgentsException):
        return _from_agents(exc, agents, provider)
    return None


def in_stream_error(provider: str, error_type: str | None, message: str | None) -> BackendError:
    """An error event inside a successful (200) stream, named by its ``type`` or ``code``; what the upstream said
    (``message``) is logged."""
    return _from_status(provider, None, error_type, message, None)


def _connection_error(provider: str, what: str) -> BackendError:
    _log_failure(provider, "connection_error", what)
    return BackendError(
        "connection_error", f"{provider}: the connection to the upstream server failed or was cut", retryable=True
    )


# (code, what happened, retryable) by HTTP status; see the vendors' error pages.
_BY_STATUS: dict[int, tuple[str, str, bool]] = {
    400: ("bad_request", "the request was rejected", False),
    401: ("auth_error", "the API key was rejected (check --api-key)", False),
    402: ("billing_error", "the account cannot pay for this request", False),
    403: ("permission_denied", "the API key may not use this model or endpoint", False),
    404: ("not_found", "not found (check --model and --base-url)", False),
    408: ("timeout", "the upstream request timed out", True),
    409: ("conflict", "the request conflicted with another", True),
    413: ("bad_request", "the request is too large", False),
    422: ("bad_request", "the request was rejected", False),
    429: ("rate_limited", "rate limited", True),
    529: ("overloaded", "the upstream service is overloaded", True),
}

# The same by the ``type`` an error body or an in-stream error event carries (Anthropic's and OpenAI's names).
_BY_TYPE: dict[str, tuple[str, str, bool]] = {
    "overloaded_error": _BY_STATUS[529],
    "rate_limit_error": _BY_STATUS[429],
    "rate_limit_exceeded": _BY_STATUS[429],
    "api_error": ("upstream_error", "the upstream service failed", True),
    "server_error": ("upstream_error", "the upstream service failed", True),
    "timeout_error": _BY_STATUS[408],
    "authentication_error": _BY_STATUS[401],
    "permission_error": _BY_STATUS[403],
    "not_found_error": _BY_STATUS[404],
    "invalid_request_error": _BY_STATUS[400],
    "billing_error": _BY_STATUS[402],
}


def _from_status(
    provider: str, status: int | None, error_type: str | None, raw: str | None, retry_after: float | None
) -> BackendError:
    code, what, retryable = _classify(status, error_type, raw)
    shown_status = status is not None and status >= 300
    message = f"{provider}: HTTP {status}, {what}" if shown_status else f"{provider}: {what}"
    _log_failure(provider, code, f"HTTP {status}" if shown_status else "error event", raw)
    if retry_after is not None:
        message += f"; retry after {retry_after:g}s"
    return BackendError(code, message, retryable=retryable, retry_after=retry_after)


def _classify(status: int | None, error_type: str | None, raw: str | None) -> tuple[str, str, bool]:
    """(code, what happened, retryable) for a status, the ``type`` the error body gave, and the body."""
    by_type = _BY_TYPE.get(error_type) if error_type is not None else None
    if status is not None and status >= 500:
        # A server that answers a refused request with a 5xx still says what it refused.
        if by_type is not None and not by_type[2]:
            return by_type
        if raw and _VALIDATION.search(raw[:4000]):
            return _BY_STATUS[422]
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    if by_type is not None:
        return by_type
    if status is not None and status >= 500:
        return "upstream_error", "the upstream service failed", True
    return "upstream_error", "the upstream service reported an error", False


def _log_failure(provider: str, code: str, what: str, raw: str | None = None) -> None:
    """What the upstream said, for the operator: in the log, with the run it concerns (never in the message)."""
    said = f": {raw[:4000]}" if raw else ""
    log.warning("run %s: %s upstream failed (%s), %s%s", _run_id() or "-", provider, code, what, said)


def _run_id() -> str | None:
    """The run whose task is running: from the run context when the observability layer set it, else from the
    run task's name (``run-<id>``, its worker tasks ``run-<id>/...``)."""
    observer: Any = sys.modules.get("tokenrelay.runs.observer")
    info = observer.current_run.get() if observer is not None else None
    if info is not None:
        return str(info.run_id)
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
    name = task.get_name() if task is not None else ""
    if not name.startswith("run-"):
        return None
    return name.split("/", 1)[0].removeprefix("run-") or None


def _from_agents(exc: BaseException, agents: Any, provider: str) -> BackendError:
    if isinstance(exc, agents.MaxTurnsExceeded):
        return BackendError("max_turns", f"{provider}: {exc} (raise --agent-max-turns)")
    if isinstance(exc, agents.UserError):
        _log_failure(provider, "bad_config", f"{type(exc).__name__}: {exc}")
        return BackendError("bad_config", f"{provider}: the agent is misconfigured (see the server's log)")
    if isinstance(exc, agents.ModelBehaviorError):
        # E.g. a call to a tool that does not exist, or arguments that are not JSON: not a failure of the service.
        _log_failure(provider, "model_error", f"{type(exc).__name__}: {exc}")
        return BackendError("model_error", f"{provider}: the model gave an answer the agent cannot use")
    _log_failure(provider, "agent_error", f"{type(exc).__name__}: {exc}")
    return BackendError("agent_error", f"{provider}: the agent failed")


def _error_type(exc: Any) -> str | None:
    # Anthropic: ``type`` is the body's ``error.type``. OpenAI: ``type`` and ``code`` from the error object.
    for attr in ("type", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _raw_body(exc: Any) -> str | None:
    """What the upstream sent (the error body as the SDK parsed it, else its message), as text for the log."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping | list):
        return json.dumps(body, ensure_ascii=False, default=str)
    if isinstance(body, str) and body.strip():
        return body.strip()
    message = getattr(exc, "message", None)
    return str(message) if message else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), as the SDKs read them."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, round(when.timestamp() - time.time()))
    except (TypeError, ValueError):
        return None


def _host(exc: Any) -> str:
    try:
        request = getattr(exc, "request", None)
    except RuntimeError:  # httpx: "The .request property has not been set."
        request = None
    url = getattr(request, "url", None)
    host = getattr(url, "host", None)
    return str(host) if host else "the upstream server"
