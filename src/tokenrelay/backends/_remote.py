"""What the backends that call a vendor's SDK share: a client made on first use, the stream counts, and the loop
that turns the upstream stream into events — read by tokenrelay itself (the fast path, ``_wire.py``) or by the
SDK."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from tokenrelay.backends._errors import upstream_errors
from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends._wire import WireUpstream
from tokenrelay.backends.base import GenerateOptions
from tokenrelay.backends.upstream_timing import upstream_responded
from tokenrelay.events import Event, FinishEvent
from tokenrelay.messages import Message

__all__ = ["RemoteBackend", "TranslatingBackend", "Translator", "Upstream"]

_Item_co = TypeVar("_Item_co", covariant=True)
_Item_contra = TypeVar("_Item_contra", contravariant=True)
_Item = TypeVar("_Item")


class _Client(Protocol):
    async def close(self) -> None: ...


_ClientT = TypeVar("_ClientT", bound=_Client)


class Upstream(Protocol[_Item_co]):
    """An SDK's open stream (``openai.AsyncStream``, ``anthropic.AsyncStream``): items, and a way to drop it."""

    def __aiter__(self) -> AsyncIterator[_Item_co]: ...

    async def close(self) -> None: ...


class Translator(Protocol[_Item_contra]):
    """An SDK's stream items in, events out. Pure: no I/O, one instance per stream."""

    def feed(self, item: _Item_contra) -> list[Event]: ...

    def finish(self) -> FinishEvent:
        """The last event, once the stream has ended; ``BackendError`` if it ended before the answer did."""
        ...


class RemoteBackend(Generic[_ClientT]):
    """The lifecycle of a backend that calls a vendor's API through its SDK.

    Its configuration (and the SDK's presence) is checked when it is built, so :meth:`load` has nothing left to
    do; the client is made on first use and closed by :meth:`close`.
    """

    def __init__(self) -> None:
        self.stats = StreamStats()
        self._client: _ClientT | None = None

    def new_client(self) -> _ClientT:
        """A client for the configured endpoint."""
        raise NotImplementedError

    @property
    def client(self) -> _ClientT:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def load(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class TranslatingBackend(RemoteBackend[_ClientT], Generic[_ClientT, _Item]):
    """A remote backend whose stream is the upstream's stream, translated item by item.

    Two ways to read it, which give the same events: the fast path (``fast_path``, the default) sends the request
    through the SDK but decodes the body itself into plain dicts (:meth:`open_wire`, read by ``wire_translator``);
    the SDK path lets the SDK parse each item into its models (:meth:`open_upstream`, read by ``translator``).
    Errors are named for the backend's ``name``.
    """

    name: str
    translator: Callable[[], Translator[_Item]]
    """Makes a fresh translator of the SDK's items for each stream (the translator class)."""
    wire_translator: Callable[[], Translator[dict[str, Any]]]
    """The same for the fast path: the items are the events' JSON data, as dicts."""
    fast_path: bool = True

    def params(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        """The request body (less ``stream``), for this conversation and these overrides."""
        raise NotImplementedError

    async def open_upstream(self, params: dict[str, Any]) -> Upstream[_Item]:
        """Send the streaming request; the SDK's open stream.

        The parameters are a plain dict, which hides the streaming call from the SDK's overloads: an implementation
        names the type the call returns (``stream: AsyncStream[Chunk] = await ...``) rather than returning ``Any``.
        """
        raise NotImplementedError

    async def open_wire(self, params: dict[str, Any]) -> WireUpstream:
        """Send the streaming request through the SDK; its body, read by the fast path (``_wire.open_wire``)."""
        raise NotImplementedError

    def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        return self._translate(messages, options)

    async def _translate(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        # The request is sent when the stream is first iterated, inside the error mapping and the stream counts.
        fast = self.fast_path
        translator: Translator[Any] = self.wire_translator() if fast else self.translator()
        with self.stats.track():
            with upstream_errors(self.name):
                params = self.params(messages, options)
                sent = time.monotonic()
                if fast:
                    wire = await self.open_wire(params)
                    del params  # the whole conversation, as the request: not held for the stream's length
                    upstream_responded(time.monotonic() - sent)  # for tracing: the upstream's time to first byte
                    try:
                        # Body, decoder and translator in one generator: one frame resumed per chunk.
                        async for event in wire.events(translator.feed):
                            yield event
                    finally:
                        await wire.close()  # cancelled or closed mid-stream: dropping the connection stops it
                else:
                    upstream: Upstream[Any] = await self.open_upstream(params)
                    del params
                    upstream_responded(time.monotonic() - sent)
                    try:
                        async for item in upstream:
                            for event in translator.feed(item):
                                yield event
                    finally:
                        # Cancelled or closed mid-stream: drop the connection now, which is what stops the generation.
                        await upstream.close()
            yield translator.finish()
