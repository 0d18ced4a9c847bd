"""The Python client: iterate a chat stream's events, sync or async, with the project's own SSE decoder."""

from __future__ import annotations

import json
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
    """The stream ended (connection closed) without its done frame."""

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
    """Turns decoded SSE events into stream events and notices a missing done frame."""

    def __init__(self) -> None:
        self.decoder = SSEDecoder()
        self.text: list[str] = []
        self.done = False

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for item in self.decoder.feed(chunk):
            if isinstance(item, ServerSentEvent):
                event = _parse(item)
                if isinstance(event, Delta):
                    self.text.append(event.text)
                elif isinstance(event, Done):
                    self.done = True
                out.append(event)
        return out

    def end(self) -> None:
        self.decoder.close()
        if not self.done:
            raise IncompleteStreamError(self.decoder.last_event_id, "".join(self.text))


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


class AsyncClient:
    """``async for event in client.stream_chat("hi"): ...``"""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        # A read timeout well above the server's heartbeat interval: heartbeats keep an idle stream alive.
        self._http = http or httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)
        )

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
        body = _body(message, user_id, conversation_id)
        try:
            async with self._http.stream("POST", "/api/chat/stream", json=body) as response:
                if response.status_code >= 400:
                    raise _http_error(response, await response.aread())
                try:
                    async for chunk in response.aiter_raw():
                        for event in follower.feed(chunk):
                            yield event
                except httpx.TransportError:
                    pass  # a cut connection: reported below as an incomplete stream
        except httpx.ConnectError as exc:
            raise TokenrelayConnectionError(f"cannot reach {self._http.base_url}: {exc}") from exc
        follower.end()

    async def chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> ChatResult:
        result = ChatResult("", "", None, None)
        async for event in self.stream_chat(message, user_id=user_id, conversation_id=conversation_id):
            _collect([event], result)
        return result

    async def health(self) -> dict[str, Any]:
        response = await self._http.get("/api/health")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


class Client:
    """The synchronous twin of :class:`AsyncClient`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = http or httpx.Client(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)
        )

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
        body = _body(message, user_id, conversation_id)
        try:
            with self._http.stream("POST", "/api/chat/stream", json=body) as response:
                if response.status_code >= 400:
                    raise _http_error(response, response.read())
                try:
                    for chunk in response.iter_raw():
                        yield from follower.feed(chunk)
                except httpx.TransportError:
                    pass  # a cut connection: reported below as an incomplete stream
        except httpx.ConnectError as exc:
            raise TokenrelayConnectionError(f"cannot reach {self._http.base_url}: {exc}") from exc
        follower.end()

    def chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> ChatResult:
        result = ChatResult("", "", None, None)
        for event in self.stream_chat(message, user_id=user_id, conversation_id=conversation_id):
            _collect([event], result)
        return result

    def health(self) -> dict[str, Any]:
        response = self._http.get("/api/health")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data
