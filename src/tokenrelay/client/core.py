"""The client's I/O-free core: every decision of a followed stream, so that the two shells only move bytes.

bytes in, events out (:class:`Follower`), and for each attempt the request to send next, how long to wait before
it, what its answer means and when to give up (:class:`Attempts`). Nothing here opens a socket or sleeps: the async
and the sync client run the same loop around it (see :class:`Attempts`), and tests drive it with plain bytes and
``httpx.Response`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenrelay.client.errors import IncompleteStreamError, http_error, unreachable
from tokenrelay.client.events import Delta, Done, StreamEvent, parse
from tokenrelay.sse import ServerSentEvent, SSEDecoder

__all__ = [
    "HEALTH",
    "Attempts",
    "Follower",
    "Request",
    "Resume",
    "approval_request",
    "approved",
    "cancel_request",
    "cancelled",
    "health",
    "http_options",
]

# A resume answered with one of these is worth another try (a gateway error, a busy server); any other answer that
# is not the stream (404: expired or unknown, 204: nothing more) means the stream cannot be completed.
_RESUMABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Resume:
    """How a client resumes a stream cut before its done frame.

    Up to ``max_retries`` reconnections in a row without progress (an event received resets the count), waiting
    ``backoff_s * 2**attempt`` (at most ``max_backoff_s``) — or longer, if the server asked for more with SSE
    ``retry:``. ``Resume(max_retries=0)`` turns resuming off.
    """

    max_retries: int = 5
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0

    def delay(self, attempt: int, retry_ms: int | None) -> float:
        """Seconds to wait before reconnection number ``attempt`` (from 0) of a run of failures."""
        delay = min(self.backoff_s * (1 << attempt), self.max_backoff_s)
        if retry_ms is not None:
            delay = max(delay, retry_ms / 1000)
        return delay


class Follower:
    """Turns decoded SSE events into stream events across reconnections: no duplicate, no gap.

    Each connection gets a fresh decoder (a frame cut in half by a dropped connection is discarded, and sent again
    by the server after the last whole one); an event whose id is not past the last one seen is dropped, so a
    resume that overlaps is harmless.
    """

    def __init__(self, last_id: str = "") -> None:
        self.decoder = SSEDecoder()
        self.text: list[str] = []
        self.done = False
        self.last_id = last_id
        self.retry_ms: int | None = None

    def reconnect(self) -> None:
        """Start a new connection's bytes: whatever the last one left half-sent is dropped."""
        self.decoder.close()
        self.decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        """The events ``chunk`` completes, minus those already delivered."""
        out: list[StreamEvent] = []
        items = self.decoder.feed(chunk)
        if self.decoder.retry is not None:
            self.retry_ms = self.decoder.retry
        for item in items:
            if isinstance(item, ServerSentEvent):
                if item.id and self.last_id and _seq(item.id) <= _seq(self.last_id):
                    continue  # already delivered before the reconnection
                event = parse(item)
                if item.id:
                    self.last_id = item.id
                if isinstance(event, Delta):
                    self.text.append(event.text)
                elif isinstance(event, Done):
                    self.done = True
                out.append(event)
        return out


def _seq(event_id: str) -> int:
    try:
        return int(event_id)
    except ValueError:
        return -1


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, decided by the core and sent as it is by a shell."""

    method: str
    path: str
    delay: float = 0.0
    """Seconds to wait before sending it (a resume's backoff)."""
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None

    def httpx_args(self) -> dict[str, Any]:
        """The arguments of ``httpx.Client.request`` / ``.stream`` (sync or async alike) for this request."""
        return {
            "method": self.method,
            "url": self.path,
            "headers": self.headers,
            "params": self.params,
            "json": self.json,
        }


class Attempts:
    """One followed stream's attempts: the first request, then resumes from the last event id until the done frame.

    Both shells run this loop, with their own I/O at the marked steps::

        while (request := attempts.next_request()) is not None:
            sleep(request.delay)                             # I/O
            try:
                response = send(request)                     # I/O
                if attempts.accepts(response):
                    if cancel := attempts.pending_cancel():
                        send(cancel)                         # I/O: a Stop asked for before the run was named
                    for chunk in response's bytes:           # I/O
                        yield from attempts.feed(chunk)
                else:
                    attempts.refused(response, its body)     # I/O: the body
            except httpx.TransportError as exc:
                attempts.failed(exc, base_url)
        attempts.end()

    The first request's refusal is a :class:`~tokenrelay.client.TokenrelayHTTPError`, and a server that cannot be
    reached for it a :class:`~tokenrelay.client.TokenrelayConnectionError`; after that, a cut connection is resumed,
    and a stream that could not be completed is an :class:`~tokenrelay.client.IncompleteStreamError` at ``end()``.
    """

    def __init__(
        self,
        policy: Resume,
        *,
        body: dict[str, Any] | None = None,
        run_id: str | None = None,
        after: int = 0,
        user_id: str | None = None,
    ) -> None:
        self.policy = policy
        self.follower = Follower(str(after) if after else "")
        self.run_id = run_id
        self.conversation_id: str | None = None
        self._body = body  # the chat's POST body; None when following a run by id
        self._user_id = user_id
        self._sent = 0  # requests sent: 1 while the first one is answered
        self._over = False  # an answer said that no request can complete the stream
        self._nothing_more = False  # the first answer was a 204: a finished run with nothing after ``after``
        self.failures = 0  # resumes in a row without progress
        self._seen = ""  # the last event id when progress was last counted
        self._cancel_wanted = False  # a cancel asked for before the server named the run

    @classmethod
    def chat(cls, policy: Resume, message: str, user_id: str | None, conversation_id: str | None) -> Attempts:
        """A new chat turn: POST the message, then resume the run the answer names in ``x-run-id``."""
        body: dict[str, Any] = {"message": message}
        if user_id is not None:
            body["user_id"] = user_id
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        return cls(policy, body=body, user_id=user_id)

    @classmethod
    def run(cls, policy: Resume, run_id: str, after: int, user_id: str | None) -> Attempts:
        """A run followed by id from after event id ``after`` (0: from its start)."""
        return cls(policy, run_id=run_id, after=after, user_id=user_id)

    @property
    def _first(self) -> bool:
        return self._sent == 1

    @property
    def started(self) -> bool:
        """Whether a request was sent: before that, there is no run to stop."""
        return self._sent > 0

    def cancel(self) -> Request | None:
        """The request that stops this stream's run, to send now; ``None`` while the server has not named the run.

        A cancel asked for while the chat's POST is still unanswered is remembered, and :meth:`pending_cancel` hands
        it over as soon as the answer names the run.
        """
        if self.run_id is None:
            self._cancel_wanted = True
            return None
        return cancel_request(self.run_id, self._user_id)

    def pending_cancel(self) -> Request | None:
        """The cancel asked for before the run was named, once the run is: the shell sends it, once."""
        if not self._cancel_wanted or self.run_id is None:
            return None
        self._cancel_wanted = False
        return cancel_request(self.run_id, self._user_id)

    def next_request(self) -> Request | None:
        """The request to send now, or ``None`` when there is none left to try (then call :meth:`end`)."""
        self._sent += 1
        if self._first:
            return Request("POST", "/api/chat/stream", json=self._body) if self._body is not None else self._resume()
        delay = None if self._over else self._next_delay()
        return None if delay is None else self._resume(delay)

    def _next_delay(self) -> float | None:
        if self.follower.done or self.run_id is None:
            return None
        if self.follower.last_id != self._seen:
            self._seen = self.follower.last_id
            self.failures = 0  # progress: the count is of failures in a row
        if self.failures >= self.policy.max_retries:
            return None
        delay = self.policy.delay(self.failures, self.follower.retry_ms)
        self.failures += 1
        self.follower.reconnect()
        return delay

    def _resume(self, delay: float = 0.0) -> Request:
        assert self.run_id is not None
        params = {"user_id": self._user_id} if self._user_id is not None else {}
        headers = {"last-event-id": self.follower.last_id or "0"}
        return Request("GET", f"/api/runs/{self.run_id}/stream", delay, headers, params)

    def accepts(self, response: httpx.Response) -> bool:
        """Whether ``response`` is the stream, to :meth:`feed` from; if not, its body goes to :meth:`refused`."""
        status = response.status_code
        if not self._first:
            return status == 200
        if status >= 400 or (status == 204 and self._body is None):
            return False
        if self._body is not None:
            self.run_id = response.headers.get("x-run-id")
        self.conversation_id = response.headers.get("x-conversation-id") or self.conversation_id
        return True

    def refused(self, response: httpx.Response, body: bytes) -> None:
        """Take an answer that is not the stream: raise for the first request, else resume or give up."""
        status = response.status_code
        if self._first:
            if status >= 400:
                raise http_error(response, body)
            self._nothing_more = True  # a 204: the run is finished, and nothing comes after ``after``
            self._over = True
        elif status not in _RESUMABLE:
            self._over = True

    def failed(self, exc: httpx.TransportError, base_url: object) -> None:
        """Take a transport error: only an unreachable server, on the first request, is fatal; a cut is resumed."""
        if self._first and isinstance(exc, httpx.ConnectError):
            raise unreachable(base_url, exc) from exc

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        """The new events in a chunk of the stream's bytes."""
        return self.follower.feed(chunk)

    def end(self) -> None:
        """The stream is over: raise :class:`IncompleteStreamError` unless it ended with its done frame."""
        self.follower.decoder.close()
        if not self.follower.done and not self._nothing_more:
            raise IncompleteStreamError(self.follower.last_id, "".join(self.follower.text))


def http_options(base_url: str, headers: dict[str, str] | None, token: str | None, timeout: float) -> dict[str, Any]:
    """The arguments of the ``httpx`` client a shell opens for itself."""
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    # A read timeout well above the server's heartbeat interval: heartbeats keep an idle stream alive.
    return {"base_url": base_url, "headers": sent, "timeout": httpx.Timeout(timeout, connect=10.0)}


HEALTH = Request("GET", "/api/health")


def cancel_request(run_id: str, user_id: str | None) -> Request:
    """The request that stops a run, wherever it runs."""
    return Request("POST", f"/api/runs/{run_id}/cancel", params={"user_id": user_id} if user_id is not None else {})


def approval_request(run_id: str, call_id: str, approved: bool, reason: str | None, user_id: str | None) -> Request:
    """The request that answers a tool call the run waits for, on any instance."""
    body: dict[str, Any] = {"tool_call_id": call_id, "approved": approved}
    if reason is not None:
        body["reason"] = reason
    params = {"user_id": user_id} if user_id is not None else {}
    return Request("POST", f"/api/runs/{run_id}/approvals", params=params, json=body)


def approved(response: httpx.Response) -> str:
    """What became of an answer: ``recorded``, ``resumed`` or ``unchanged``; the server's refusal raised."""
    if response.status_code >= 400:
        raise http_error(response, response.content)
    return str(response.json().get("status", ""))


def cancelled(response: httpx.Response) -> bool:
    """Whether the cancel request stopped a running run."""
    if response.status_code >= 400:
        raise http_error(response, response.content)
    return bool(response.json().get("cancelled"))


def health(response: httpx.Response) -> dict[str, Any]:
    """The health report, or the error for a server that did not answer with one."""
    if not response.is_success:
        raise http_error(response, response.content)
    data: dict[str, Any] = response.json()
    return data
