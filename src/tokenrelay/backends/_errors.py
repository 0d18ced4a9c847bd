"""Upstream failures, named once: every vendor SDK's exceptions become a :class:`BackendError` at the boundary.

The OpenAI and Anthropic SDKs share one exception layout (``APIStatusError`` with ``status_code``, ``response`` and
``body``; ``APIConnectionError``; ``APITimeoutError``), so one mapping serves both. SDKs are looked up in
``sys.modules`` rather than imported: an exception can only come from an SDK that is already loaded, and this
module must not pull in an optional extra by itself.
"""

from __future__ import annotations

import email.utils
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tokenrelay.backends.base import BackendError

__all__ = ["in_stream_error", "missing_extra", "to_backend_error", "upstream_errors"]


def missing_extra(backend: str, extra: str, package: str) -> BackendError:
    """The one-line error for an optional SDK that is not installed."""
    return BackendError(
        "missing_extra", f"the {backend} backend needs the {package} package: pip install 'tokenrelay[{extra}]'"
    )


@contextmanager
def upstream_errors(provider: str) -> Iterator[None]:
    """Re-raise what the SDK raised as a :class:`BackendError`; cancellation and unknown errors pass through."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        mapped = to_backend_error(exc, provider)
        if mapped is None:
            raise
        raise mapped from exc


def to_backend_error(exc: BaseException, provider: str) -> BackendError | None:
    """The :class:`BackendError` for an SDK exception, or ``None`` when it is not one this module knows."""
    for sdk_name in ("openai", "anthropic"):
        sdk: Any = sys.modules.get(sdk_name)
        if sdk is None:
            continue
        if isinstance(exc, sdk.APIStatusError):
            headers = getattr(exc.response, "headers", {})
            return _from_status(provider, exc.status_code, _error_type(exc), _detail(exc), _retry_after(headers))
        if isinstance(exc, sdk.APITimeoutError):
            return BackendError("timeout", f"{provider}: the upstream request timed out", retryable=True)
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f": {type(cause).__name__}: {cause}" if cause is not None and str(cause) else ""
            return BackendError(
                "connection_error",
                f"{provider}: the connection to {_host(exc)} failed or was cut{why}",
                retryable=True,
            )
        if isinstance(exc, sdk.APIError):
            # An error event inside a 200 stream (OpenAI's ``{"error": {...}}`` data): no status, only a type.
            return in_stream_error(provider, _error_type(exc), _detail(exc))
    for http_name in ("httpx2", "httpx"):
        # Some SDKs let a transport error out of a stream unwrapped (a connection cut mid-body).
        http: Any = sys.modules.get(http_name)
        if http is None:
            continue
        if isinstance(exc, http.TimeoutException):
            return BackendError("timeout", f"{provider}: the upstream server stopped answering", retryable=True)
        if isinstance(exc, http.TransportError):
            return BackendError(
                "connection_error",
                f"{provider}: the connection to {_host(exc)} failed or was cut: {type(exc).__name__}: {exc}",
                retryable=True,
            )
    agents: Any = sys.modules.get("agents")
    if agents is not None and isinstance(exc, agents.AgentsException):
        return _from_agents(exc, agents, provider)
    return None


def in_stream_error(provider: str, error_type: str | None, message: str | None) -> BackendError:
    """An error event inside a successful (200) stream, named by its ``type`` or ``code``."""
    return _from_status(provider, None, error_type, message, None)


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
    provider: str, status: int | None, error_type: str | None, detail: str | None, retry_after: float | None
) -> BackendError:
    if status is not None and status in _BY_STATUS:
        code, what, retryable = _BY_STATUS[status]
    elif error_type is not None and error_type in _BY_TYPE:
        code, what, retryable = _BY_TYPE[error_type]
    elif status is not None and status >= 500:
        code, what, retryable = "upstream_error", "the upstream service failed", True
    else:
        code, what, retryable = "upstream_error", "the upstream service reported an error", False
    message = f"{provider}: HTTP {status}, {what}" if status is not None and status >= 300 else f"{provider}: {what}"
    if detail:
        message += f": {detail}"
    if retry_after is not None:
        message += f"; retry after {retry_after:g}s"
    return BackendError(code, message, retryable=retryable, retry_after=retry_after)


def _from_agents(exc: BaseException, agents: Any, provider: str) -> BackendError:
    if isinstance(exc, agents.MaxTurnsExceeded):
        return BackendError("max_turns", f"{provider}: {exc} (raise --agent-max-turns)")
    if isinstance(exc, agents.UserError):
        return BackendError("bad_config", f"{provider}: {exc}")
    if isinstance(exc, agents.ModelBehaviorError):
        return BackendError("model_error", f"{provider}: the model misbehaved: {exc}", retryable=True)
    return BackendError("agent_error", f"{provider}: {type(exc).__name__}: {exc}")


def _error_type(exc: Any) -> str | None:
    # Anthropic: ``type`` is the body's ``error.type``. OpenAI: ``type`` and ``code`` from the error object.
    for attr in ("type", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _detail(exc: Any) -> str | None:
    """The vendor's own words, without the SDK's ``Error code: 429 - {...}`` wrapping."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    message = getattr(exc, "message", None)
    return str(message)[:300] if message else None


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
