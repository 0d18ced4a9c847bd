"""What the async and the sync client share: their options, and the streams they follow through the core."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import httpx

from tokenrelay.client.core import Attempts, Resume, http_options

__all__ = ["Shell"]

HTTP = TypeVar("HTTP", httpx.AsyncClient, httpx.Client)
Stream = TypeVar("Stream")


class Shell(Generic[HTTP, Stream]):
    """A client over one ``httpx`` client (``HTTP``), whose streams are ``Stream`` (an async or a sync run stream).

    A subclass does the I/O: it opens its ``httpx`` client (:meth:`_open`) and runs the core's loop
    (:meth:`_follow`, see :class:`~tokenrelay.client.core.Attempts`); every decision is the core's.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        resume: Resume | None = None,
        http: HTTP | None = None,
    ) -> None:
        """``token`` is sent as a bearer token; ``http``, when given, is used as it is (its options win)."""
        self._http: HTTP = http if http is not None else self._open(http_options(base_url, headers, token, timeout))
        self.resume = resume or Resume()

    @property
    def base_url(self) -> str:
        """The server's URL, as requests are sent to it."""
        return str(self._http.base_url)

    def stream_chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> Stream:
        """Send a message and stream the answer's events, resuming a cut stream from its last event id.

        The stream is an iterator of events with the run's ``run_id`` and ``conversation_id`` (once the server has
        answered) and a ``cancel()``, the Stop. Leaving the loop only closes the connection, and the server keeps
        the run for a resume: see :mod:`tokenrelay.client.stream`.
        """
        return self._follow(Attempts.chat(self.resume, message, user_id, conversation_id))

    def stream_run(self, run_id: str, *, after: int = 0, user_id: str | None = None) -> Stream:
        """Follow a run (started elsewhere, or before a crash of the caller) from after event id ``after``."""
        return self._follow(Attempts.run(self.resume, run_id, after, user_id))

    def _open(self, options: dict[str, Any]) -> HTTP:
        raise NotImplementedError

    def _follow(self, attempts: Attempts) -> Stream:
        raise NotImplementedError
