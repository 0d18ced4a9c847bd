"""The fast path for a vendor's stream: the SDK sends the request, tokenrelay reads the body.

The SDK still builds, authenticates and retries the request and turns a refused one (4xx/5xx) into its exception;
what it returns is its raw HTTP response (``with_streaming_response``), whose body is read here as bytes, split by
tokenrelay's own SSE decoder and parsed by ``orjson`` into plain dicts — no model object per chunk, which is where
the SDK spends most of its time. Each vendor's stream conventions (OpenAI's ``[DONE]`` and ``{"error": ...}``
data, Anthropic's ``ping`` and ``error`` events) are applied here exactly as the SDKs apply them, and the errors
are the SDKs' own exceptions, so the error mapping (``_errors.py``) cannot tell the two paths apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tokenrelay.backends.base import BackendError
from tokenrelay.sse import SSEDecoder

if TYPE_CHECKING:
    import httpx2

__all__ = ["ANTHROPIC", "OPENAI", "SKIP", "STOP", "Convention", "WireUpstream", "open_wire", "shared_text"]

log = logging.getLogger("tokenrelay.backends")

# What a vendor's convention makes of one SSE event besides a dict: nothing, or the end of the answer.
SKIP: Any = object()
STOP: Any = object()

# Texts this short are shared (interned): one string object for each distinct token however many runs keep it.
_SHARED_MAX = 24


def shared_text(text: Any) -> Any:
    """A delta's text as the one string object every run that keeps the same text shares.

    A run keeps all its deltas (for resumes, and its answer), and a token's text parsed from JSON is a new ~50-byte
    object each time; tokens repeat across an answer and across streams, so most deltas then cost a pointer. The
    strings are interned mortal: they go when no run keeps them. Anything but a short ``str`` is returned as it is.
    """
    return sys.intern(text) if type(text) is str and len(text) <= _SHARED_MAX else text


# How long the rest of a body is read after OpenAI's [DONE] (which ends the answer), so that the connection can be
# reused; the SDK waits as long.
_DRAIN_S = 0.1


@dataclass(frozen=True, slots=True)
class Convention:
    """How one vendor's SDK reads its stream."""

    item: Callable[[str, str, httpx2.Response, str], Any]
    """One SSE event (its type and its data) to a dict (the event's JSON data), ``SKIP`` or ``STOP``; raises the
    SDK's exception for an error event. The last argument names the backend in errors."""
    wraps_transport: bool
    """Whether the SDK wraps a timeout or a cut connection while reading the body in its own exceptions (OpenAI's
    does; Anthropic's lets httpx's through)."""


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class _APIResponse(Protocol):
    http_response: httpx2.Response


class _StreamingCall(Protocol):
    """The SDK's ``with_streaming_response`` call: entering it sends the request (closing is the stream's)."""

    async def __aenter__(self) -> _APIResponse: ...


async def open_wire(call: _StreamingCall, convention: Convention, provider: str) -> WireUpstream:
    """Send the request the SDK prepared (``client....with_streaming_response.create(stream=True, ...)``); the
    open stream, read by the fast path. A refused request raises the SDK's exception, as the SDK path does."""
    api_response = await call.__aenter__()
    response = api_response.http_response
    _forget_request_body(response)
    return WireUpstream(response, convention, provider)


def _forget_request_body(response: httpx2.Response) -> None:
    """Keep only the request's method and URL (what errors name) for as long as the stream lasts, not its headers
    and body: the body is the whole conversation, and a stream can last minutes."""
    import httpx2

    from tokenrelay.backends._http import raw_body

    request = response.request
    slim = httpx2.Request(request.method, request.url, extensions={"timeout": request.extensions.get("timeout")})
    response.request = slim
    body = raw_body(response)
    if body is not None:
        body.connection.request = slim


class WireUpstream:
    """The SDK's raw HTTP response of a stream, read by the fast path.

    :meth:`events` is what the fast path reads: the body decoded, each item applied by the vendor's convention and
    translated, in one async generator — one frame resumed per chunk, not one per layer (body, decoder, translator).
    """

    def __init__(self, response: httpx2.Response, convention: Convention, provider: str) -> None:
        self.response = response
        self._convention = convention
        self._provider = provider

    async def close(self) -> None:
        await self.response.aclose()

    def _decoder(
        self, translate: Callable[[Any], list[Any]]
    ) -> Callable[[bytes], tuple[list[Any], bool, Exception | None]]:
        """One chunk of the body to its events, whether the vendor's end of stream was in it, and the error an
        item raised (after the events before it, which go out first)."""
        response, read, provider = self.response, self._convention.item, self._provider
        feed = SSEDecoder().feed_data  # (event, data) pairs: no event object per token

        def decode(chunk: bytes) -> tuple[list[Any], bool, Exception | None]:
            out: list[Any] = []
            try:
                for event, data in feed(chunk):
                    item = read(event, data, response, provider)
                    if item is SKIP:
                        continue
                    if item is STOP:
                        return out, True, None
                    out += translate(item)
            except Exception as exc:
                return out, False, exc
            return out, False, None

        return decode

    async def events(self, translate: Callable[[Any], list[Any]]) -> AsyncGenerator[Any, None]:
        """The body's items through ``translate`` (a translator's ``feed``: one item to its events), until the
        vendor's end of stream or the body's."""
        from tokenrelay.backends._http import raw_body

        decode = self._decoder(translate)
        body = raw_body(self.response)
        conn, timeout, chunks = None, None, None
        source: _Closable
        if body is not None:
            conn, timeout, source = body.connection, body.read_timeout, body
        else:
            source = chunks = self.response.aiter_bytes()
        try:
            while True:
                # The next chunk: from the lean transport's connection as it comes (no iterator layers), or from
                # httpx2's iterator (another transport, or a content-encoded body).
                if conn is not None:
                    data = conn.take()
                    if not data:
                        if conn.complete:
                            return
                        await conn.readable_future(timeout)
                        continue
                else:
                    assert chunks is not None
                    data = await anext(chunks, b"")
                    if not data:
                        return
                out, stop, error = decode(data)
                for event in out:
                    yield event
                if error is not None:
                    raise error
                if stop:
                    await self._drain(body.chunks() if body is not None else chunks)
                    return
        except Exception as exc:
            mapped = self._transport_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            await source.aclose()

    def _transport_error(self, exc: Exception) -> Exception | None:
        """A transport error while reading the body, wrapped as the vendor's SDK wraps it (or not), so that both
        paths give the same error."""
        if not self._convention.wraps_transport:
            return None
        import httpx2
        import openai

        if isinstance(exc, httpx2.TimeoutException):
            return openai.APITimeoutError(request=self.response.request)
        if isinstance(exc, httpx2.RequestError | ssl.SSLError):
            return openai.APIConnectionError(request=self.response.request)
        return None

    @staticmethod
    async def _drain(chunks: AsyncIterator[bytes] | None) -> None:
        """Read what is left of the body after the end of the answer (briefly), so that its connection can be
        reused."""
        if chunks is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_DRAIN_S):
                async for _ in chunks:
                    pass


def _json(data: str, provider: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("%s: the upstream sent an event that is not JSON: %r", provider, data[:2000])
        raise BackendError("upstream_error", f"{provider}: the upstream sent an event that is not JSON") from None


def openai_item(event: str, data: str, response: httpx2.Response, provider: str) -> Any:
    """OpenAI's stream convention (``openai.AsyncStream``): ``[DONE]`` ends it; data with a truthy ``error`` is
    an error."""
    if data[:6] == "[DONE]":
        return STOP
    try:
        item = orjson.loads(data)  # inline rather than _json: this runs once per token
    except orjson.JSONDecodeError:
        return _json(data, provider)  # raises the named error
    if type(item) is dict:
        error = item.get("error")
        if error:
            import openai

            message = error.get("message") if isinstance(error, dict) else None
            if not message or not isinstance(message, str):
                message = "An error occurred during streaming"
            raise openai.APIError(message=message, request=response.request, body=error)
    return item


def anthropic_item(event: str, data: str, response: httpx2.Response, provider: str) -> Any:
    """Anthropic's stream convention (``anthropic.AsyncStream``): ``ping`` and unnamed events are skipped, an
    ``error`` event raises a status error (with the 200 response), an event without data is skipped."""
    if event == "ping" or event == "message":  # "message": the decoder's name for an event that has none
        return SKIP
    if event == "error":
        import anthropic

        body: object = data
        try:
            body = orjson.loads(data)
            message = f"{body}"
        except orjson.JSONDecodeError:
            message = data or f"Error code: {response.status_code}"
        raise anthropic.APIStatusError(message, response=response, body=body)
    if not data:
        return SKIP
    return _json(data, provider)


OPENAI = Convention(openai_item, wraps_transport=True)
ANTHROPIC = Convention(anthropic_item, wraps_transport=False)
