"""One root for every error tokenrelay raises, so callers can catch the library's failures apart from their own."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "RunClosedError",
    "RunExistsError",
    "RunFinishedError",
    "RunLimitError",
    "RunNotFound",
    "StoreError",
    "StoreUnavailable",
    "TokenrelayError",
]


class TokenrelayError(Exception):
    """The root of tokenrelay's errors."""


class ConfigError(TokenrelayError, ValueError):
    """A setting that cannot work (``serve`` prints it as one line and exits)."""


class RunNotFound(TokenrelayError, LookupError):
    """No such run: unknown, expired, or another user's."""


class RunLimitError(TokenrelayError, RuntimeError):
    """The instance is already running its maximum number of runs."""


class StoreError(TokenrelayError):
    """A run store refused an operation."""


class StoreUnavailable(StoreError):
    """A dependency (Redis, the database) cannot be reached right now; trying again after ``retry_after`` seconds
    may succeed. The server answers it with a 503 and ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RunExistsError(StoreError, ValueError):
    """A run with this id was already created."""


class RunFinishedError(StoreError, ValueError):
    """Events were appended to a run that has already finished."""


class RunClosedError(StoreError, RuntimeError):
    """The run was ended by someone else (its owner was declared dead): the owner must stop writing to it."""


class BackendError(TokenrelayError):
    """A failure the backend can name. The run turns it into an :class:`~tokenrelay.events.ErrorEvent`."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
