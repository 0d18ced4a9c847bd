"""``EventStream``: a subscription encoded for the wire, with the retry hint on its first write only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import wait_for_async
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.server import Relay, Settings


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    backend = ScriptedBackend([TextDelta("a"), Pause(0.05), TextDelta("b"), FinishEvent("stop")])
    relay = Relay(backend, Settings(backend="synthetic", retry_ms=1500, heartbeat_s=30), history=MemoryHistory())
    async with relay.lifespan():
        yield relay


async def test_the_retry_hint_rides_on_the_first_write_only(relay: Relay) -> None:
    info = await relay.start_chat("hi", user_id="ann", conversation_id=None)
    stream = await relay.stream(info)
    try:
        async with asyncio.timeout(5):
            chunks = [chunk async for chunk in stream]
    finally:
        await stream.aclose()
    assert chunks[0].startswith(b"retry: 1500\n\nid: 1\n")
    assert not any(b"retry:" in chunk for chunk in chunks[1:])
    assert b'"done": true' in chunks[-1]


async def test_an_encoder_that_refuses_the_hint_gets_none(relay: Relay) -> None:
    info = await relay.start_chat("hi", user_id="ann", conversation_id=None)
    stream = await relay.stream(info, protocol="openai")
    try:
        async with asyncio.timeout(5):
            chunks = [chunk async for chunk in stream]
    finally:
        await stream.aclose()
    assert not any(b"retry:" in chunk for chunk in chunks)
    assert chunks[-1].endswith(b"data: [DONE]\n\n")


async def test_closing_before_the_first_read_releases_the_subscription(relay: Relay) -> None:
    info = await relay.start_chat("hi", user_id="ann", conversation_id=None)
    stream = await relay.stream(info)
    assert relay.runs.subscribers == 1
    await stream.aclose()
    await wait_for_async(lambda: relay.runs.subscribers == 0, timeout=5, what="the viewer to be released")
    await stream.aclose()  # a second close is harmless
