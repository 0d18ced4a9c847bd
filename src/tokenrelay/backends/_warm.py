"""A remote backend's warm-up at start: one stream through the SDK and the translation, answered in-process.

The SDKs import their resource modules and build the validators of a request's parameters on the first request
(about 0.2 s here: a fresh server answered its first request in 170 ms and the next in 10 ms). At start, before the
server accepts anything, the backend streams once from a canned answer served by ``httpx2.MockTransport`` — no
network, no key used — so the first user does not pay for it. Whatever happens there is only logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import GenerateOptions
from tokenrelay.messages import Message

if TYPE_CHECKING:
    import httpx2

    from tokenrelay.backends._remote import TranslatingBackend

__all__ = ["WARM_S", "canned_transport", "warm_up"]

log = logging.getLogger("tokenrelay.backends")

WARM_S = 10.0
"""The most the warm-up may take before the server starts anyway."""


def canned_transport(body: bytes) -> httpx2.MockTransport:
    """A transport that answers every request with ``body`` as an event stream."""
    import httpx2

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.MockTransport(answer)


async def warm_up(backend: TranslatingBackend[Any, Any], client: Any) -> None:
    """Stream once through ``backend`` on ``client`` (an SDK client on a :func:`canned_transport`); the backend's
    own client and stream counts are left as they were."""
    own_client, own_stats = backend._client, backend.stats
    backend._client, backend.stats = client, StreamStats()
    try:
        async with asyncio.timeout(WARM_S):
            async for _ in backend.stream([Message("user", "warm-up")], GenerateOptions()):
                pass
    except Exception as exc:  # a canned answer a translator finds short is fine: the imports are done
        log.debug("%s backend warm-up: %s", backend.name, exc)
    finally:
        backend._client, backend.stats = own_client, own_stats
        await client.close()
