"""The Python client: iterate a chat stream's events, sync or async, with the project's own SSE decoder."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenrelay.sse import ServerSentEvent, SSEDecoder

__all__ = [
    "AsyncClient",
    "ChatResult",
    "Client",
    "Delta",
    "Done",
    "IncompleteStreamError",
    "Resume",
    "StreamError",
    "StreamEvent",
    "TokenrelayConnectionError",
    "TokenrelayError",
    "TokenrelayHTTPError",
]


class TokenrelayError(Exception):
    """Base of the client's errors."""


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


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    id: str


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error frame: the run failed mid-stream. The done frame follows."""

    code: str
    message: str
    retryable: bool
    id: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    run_id: str | None
    conversation_id: str | None
    usage: dict[str, Any] | None
    id: str


@dataclass(frozen=True, slots=True)
class Other:
    """A frame this client does not model (reasoning, tool calls, metadata): the decoded JSON."""

    data: dict[str, Any]
    id: str


StreamEvent = Delta | StreamError | Done | Other


@dataclass(slots=True)
class ChatResult:
    text: str
    finish_reason: str
    run_id: str | None
    conversation_id: str | None
    usage: dict[str, Any] | None = None
    errors: list[StreamError] = field(default_factory=list)


def _parse(sse: ServerSentEvent) -> StreamEvent:
    data = json.loads(sse.data)
    if not isinstance(data, dict):
        return Other({"value": data}, sse.id)
    if "delta" in data:
        return Delta(str(data["delta"]), sse.id)
    if data.get("done"):
        return Done(
            str(data.get("finish_reason", "stop")),
            data.get("run_id"),
            data.get("conversation_id"),
            data.get("usage"),
            sse.id,
        )
    if isinstance(data.get("error"), dict):
        err = data["error"]
        return StreamError(
            str(err.get("code", "error")), str(err.get("message", "")), bool(err.get("retryable")), sse.id
        )
    return Other(data, sse.id)


def _http_error(response: httpx.Response, body: bytes) -> TokenrelayHTTPError:
    try:
        err = json.loads(body)["error"]
        return TokenrelayHTTPError(response.status_code, err["code"], err["message"], err.get("field"))
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")[:500]
        return TokenrelayHTTPError(response.status_code, "http_error", text or response.reason_phrase)


class _Follower:
    """Turns decoded SSE events into stream events across reconnections: no duplicate, no gap.

    Each connection gets a fresh decoder (a frame cut in half by a dropped connection is discarded, and sent again
    by the server after the last whole one); an event whose id is not past the last one seen is dropped, so a
    resume that overlaps is harmless.
    """

    def __init__(self) -> None:
        self.decoder = SSEDecoder()
        self.text: list[str] = []
        self.done = False
        self.last_id = ""
        self.retry_ms: int | None = None

    def reconnect(self) -> None:
        self.decoder.close()
        self.decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        items = self.decoder.feed(chunk)
        if self.decoder.retry is not None:
            self.retry_ms = self.decoder.retry
        for item in items:
            if isinstance(item, ServerSentEvent):
                if item.id and self.last_id and _seq(item.id) <= _seq(self.last_id):
                    continue  # already delivered before the reconnection
                event = _parse(item)
                if item.id:
                    self.last_id = item.id
                if isinstance(event, Delta):
                    self.text.append(event.text)
                elif isinstance(event, Done):
                    self.done = True
                out.append(event)
        return out

    def end(self) -> None:
        self.decoder.close()
        if not self.done:
            raise IncompleteStreamError(self.last_id, "".join(self.text))


def _seq(event_id: str) -> int:
    try:
        return int(event_id)
    except ValueError:
        return -1


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
        delay = min(self.backoff_s * (1 << attempt), self.max_backoff_s)
        if retry_ms is not None:
            delay = max(delay, retry_ms / 1000)
        return delay


class _Attempts:
    """The resume loop's bookkeeping, shared by the async and the sync client."""

    def __init__(self, policy: Resume, follower: _Follower) -> None:
        self.policy = policy
        self.follower = follower
        self.run_id: str | None = None
        self.failures = 0
        self.seen = ""

    def first(self, response: httpx.Response) -> None:
        self.run_id = response.headers.get("x-run-id")

    def resumable(self, status: int) -> bool:
        """Whether a resume answered ``status`` is worth another try (a gateway error is; 404 or 204 is not)."""
        return status in (408, 425, 429, 500, 502, 503, 504)

    def next_delay(self) -> float | None:
        """Seconds to wait before the next resume, or ``None`` when it is time to give up."""
        if self.follower.done or self.run_id is None:
            return None
        if self.follower.last_id != self.seen:
            self.seen = self.follower.last_id
            self.failures = 0  # progress: the count is of failures in a row
        if self.failures >= self.policy.max_retries:
            return None
        delay = self.policy.delay(self.failures, self.follower.retry_ms)
        self.failures += 1
        self.follower.reconnect()
        return delay

    def resume_request(self, user_id: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
        assert self.run_id is not None
        params = {"user_id": user_id} if user_id is not None else {}
        return f"/api/runs/{self.run_id}/stream", {"last-event-id": self.follower.last_id or "0"}, params


def _body(message: str, user_id: str | None, conversation_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if user_id is not None:
        body["user_id"] = user_id
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return body


def _collect(events: list[StreamEvent], result: ChatResult) -> None:
    for event in events:
        if isinstance(event, Delta):
            result.text += event.text
        elif isinstance(event, StreamError):
            result.errors.append(event)
        elif isinstance(event, Done):
            result.finish_reason = event.finish_reason
            result.run_id = event.run_id
            result.conversation_id = event.conversation_id
            result.usage = event.usage


def _headers(headers: dict[str, str] | None, token: str | None) -> dict[str, str]:
    out = dict(headers or {})
    if token is not None:
        out["authorization"] = f"Bearer {token}"
    return out


class AsyncClient:
    """``async for event in client.stream_chat("hi"): ...``

    A stream cut before its done frame (a network switch, a proxy's idle timeout, a restarted instance) is resumed
    by itself from the last event id (``resume``); the caller sees one unbroken stream. ``token`` is sent as a
    bearer token.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        resume: Resume | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        # A read timeout well above the server's heartbeat interval: heartbeats keep an idle stream alive.
        self._http = http or httpx.AsyncClient(
            base_url=base_url, headers=_headers(headers, token), timeout=httpx.Timeout(timeout, connect=10.0)
        )
        self.resume = resume or Resume()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream_chat(
        self, message: str, *, user_id: str | None = None, conversation_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        follower = _Follower()
        attempts = _Attempts(self.resume, follower)
        body = _body(message, user_id, conversation_id)
        try:
            async with self._http.stream("POST", "/api/chat/stream", json=body) as response:
                if response.status_code >= 400:
                    raise _http_error(response, await response.aread())
                attempts.first(response)
                async for event in self._relay(response, follower):
                    yield event
        except httpx.ConnectError as exc:
            raise TokenrelayConnectionError(f"cannot reach {self._http.base_url}: {exc}") from exc
        except httpx.TransportError:
            pass  # cut before the response started: nothing to resume without a run id
        async for event in self._resume(attempts, user_id):
            yield event
        follower.end()

    async def stream_run(
        self, run_id: str, *, after: int = 0, user_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Follow a run (started elsewhere, or before a crash of the caller) from after event id ``after``."""
        follower = _Follower()
        follower.last_id = str(after) if after else ""
        attempts = _Attempts(self.resume, follower)
        attempts.run_id = run_id
        path, headers, params = attempts.resume_request(user_id)
        try:
            async with self._http.stream("GET", path, headers=headers, params=params) as response:
                if response.status_code >= 400:
                    raise _http_error(response, await response.aread())
                if response.status_code == 204:
                    return  # finished, and nothing after ``after``
                async for event in self._relay(response, follower):
                    yield event
        except httpx.ConnectError as exc:
            raise TokenrelayConnectionError(f"cannot reach {self._http.base_url}: {exc}") from exc
        except httpx.TransportError:
            pass
        async for event in self._resume(attempts, user_id):
            yield event
        follower.end()

    async def _relay(self, response: httpx.Response, follower: _Follower) -> AsyncIterator[StreamEvent]:
        try:
            async for chunk in response.aiter_raw():
                for event in follower.feed(chunk):
                    yield event
        except httpx.TransportError:
            pass  # a cut connection: resumed by the caller

    async def _resume(self, attempts: _Attempts, user_id: str | None) -> AsyncIterator[StreamEvent]:
        while (delay := attempts.next_delay()) is not None:
            await asyncio.sleep(delay)
            path, headers, params = attempts.resume_request(user_id)
            try:
                async with self._http.stream("GET", path, headers=headers, params=params) as response:
                    if response.status_code != 200:
                        await response.aread()
                        if attempts.resumable(response.status_code):
                            continue
                        return  # 404 (expired) or 204 (nothing more): the stream cannot be completed
                    async for event in self._relay(response, attempts.follower):
                        yield event
            except httpx.TransportError:
                continue

    async def chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> ChatResult:
        result = ChatResult("", "", None, None)
        async for event in self.stream_chat(message, user_id=user_id, conversation_id=conversation_id):
            _collect([event], result)
        return result

    async def cancel(self, run_id: str, *, user_id: str | None = None) -> bool:
        """Stop a run, wherever it runs; ``False`` if it was not running."""
        params = {"user_id": user_id} if user_id is not None else {}
        response = await self._http.post(f"/api/runs/{run_id}/cancel", params=params)
        if response.status_code >= 400:
            raise _http_error(response, response.content)
        return bool(response.json().get("cancelled"))

    async def health(self) -> dict[str, Any]:
        response = await self._http.get("/api/health")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


class Client:
    """The synchronous twin of :class:`AsyncClient`, resuming cut streams the same way."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        resume: Resume | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = http or httpx.Client(
            base_url=base_url, headers=_headers(headers, token), timeout=httpx.Timeout(timeout, connect=10.0)
        )
        self.resume = resume or Resume()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def stream_chat(
        self, message: str, *, user_id: str | None = None, conversation_id: str | None = None
    ) -> Generator[StreamEvent, None, None]:
        follower = _Follower()
        attempts = _Attempts(self.resume, follower)
        body = _body(message, user_id, conversation_id)
        try:
            with self._http.stream("POST", "/api/chat/stream", json=body) as response:
                if response.status_code >= 400:
                    raise _http_error(response, response.read())
                attempts.first(response)
                yield from self._relay(response, follower)
        except httpx.ConnectError as exc:
            raise TokenrelayConnectionError(f"cannot reach {self._http.base_url}: {exc}") from exc
        except httpx.TransportError:
            pass
        yield from self._resume(attempts, user_id)
        follower.end()

    def _relay(self, response: httpx.Response, follower: _Follower) -> Generator[StreamEvent, None, None]:
        try:
            for chunk in response.iter_raw():
                yield from follower.feed(chunk)
        except httpx.TransportError:
            pass

    def _resume(self, attempts: _Attempts, user_id: str | None) -> Generator[StreamEvent, None, None]:
        while (delay := attempts.next_delay()) is not None:
            time.sleep(delay)
            path, headers, params = attempts.resume_request(user_id)
            try:
                with self._http.stream("GET", path, headers=headers, params=params) as response:
                    if response.status_code != 200:
                        response.read()
                        if attempts.resumable(response.status_code):
                            continue
                        return
                    yield from self._relay(response, attempts.follower)
            except httpx.TransportError:
                continue

    def chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> ChatResult:
        result = ChatResult("", "", None, None)
        for event in self.stream_chat(message, user_id=user_id, conversation_id=conversation_id):
            _collect([event], result)
        return result

    def cancel(self, run_id: str, *, user_id: str | None = None) -> bool:
        params = {"user_id": user_id} if user_id is not None else {}
        response = self._http.post(f"/api/runs/{run_id}/cancel", params=params)
        if response.status_code >= 400:
            raise _http_error(response, response.content)
        return bool(response.json().get("cancelled"))

    def health(self) -> dict[str, Any]:
        response = self._http.get("/api/health")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data
