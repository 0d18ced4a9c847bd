"""A run's subscription encoded for the wire: the frames one SSE response writes."""

from __future__ import annotations

from tokenrelay import sse
from tokenrelay.events import RunPaused
from tokenrelay.protocols.base import Encoder, ends_at_pause
from tokenrelay.runs import Heartbeat, Subscription

__all__ = ["EventStream"]


class EventStream:
    """A subscription encoded for the wire: the body of one SSE response (an :class:`~.sse_response.SSEFrames`).

    A class rather than an async generator so that ``aclose()`` releases the subscription even when the response
    never started iterating (a client that disconnects before the first byte still counts as leaving).
    """

    __slots__ = ("_encoder", "_ended", "_ends_at_pause", "_opened", "_retry", "_subscription")

    def __init__(self, subscription: Subscription, encoder: Encoder, *, retry_ms: int = 0) -> None:
        self._subscription = subscription
        self._encoder = encoder
        self._opened = False
        self._ends_at_pause = ends_at_pause(encoder)  # a turn-based protocol: the response ends at a pause
        self._ended = False
        # How long a client should wait before reconnecting; EventSource honours it by itself.
        self._retry = sse.retry_hint(retry_ms) if retry_ms else b""

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._opened:
            self._opened = True
            prelude = self._encoder.open()
            if prelude:
                return self._with_retry(prelude)
        if self._ended:
            raise StopAsyncIteration
        item = await self._subscription.__anext__()
        if isinstance(item, Heartbeat):
            chunk = self._encoder.heartbeat()
        else:
            if self._ends_at_pause:
                paused = next((i for i, stored in enumerate(item) if type(stored.event) is RunPaused), None)
                if paused is not None:
                    item, self._ended = item[: paused + 1], True
            chunk = self._encoder.encode(item)
        return self._with_retry(chunk) if self._retry else chunk

    def _with_retry(self, chunk: bytes) -> bytes:
        # The hint rides on the first write rather than going out alone before anything happened: the first thing
        # a client receives is still the first event (or heartbeat).
        retry, self._retry = self._retry, b""
        return retry + chunk

    async def aclose(self) -> None:
        await self._subscription.aclose()
