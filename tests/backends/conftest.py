from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.backends.replay import ReplayServer, Reply
from tokenrelay.backends.base import Backend, GenerateOptions, Message
from tokenrelay.events import Event, FinishEvent, TextDelta
from tokenrelay.runs import HEARTBEAT, RunManager, Subscription
from tokenrelay.stores import MemoryRunStore

HELLO = [Message("user", "What is the capital of France?")]

# Cancellation must reach the upstream server this fast (the budget), measured on the server's side.
CANCEL_BUDGET_S = 0.25


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as server:
        yield server


async def collect(
    backend: Backend, messages: list[Message] = HELLO, *, timeout_s: float = 20, **options: object
) -> list[Event]:
    """Every event of one stream, straight from the backend (a failure raises), within ``timeout_s``."""
    out: list[Event] = []
    async with asyncio.timeout(timeout_s):
        async for event in backend.stream(messages, GenerateOptions(**options)):  # type: ignore[arg-type]
            out.append(event)
    return out


async def run(backend: Backend, messages: list[Message] = HELLO) -> list[Event]:
    """Every event of one run as a client sees it: through a RunManager, failures as error events."""
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(messages, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    try:
        async with asyncio.timeout(20):
            return await read_events(sub)
    finally:
        await sub.aclose()


async def read_events(sub: Subscription, *, until_text: bool = False) -> list[Event]:
    """A subscription's events to the end of the run, or ``until_text`` up to the first batch that holds text."""
    out: list[Event] = []
    async for batch in sub:
        if batch is not HEARTBEAT:
            assert isinstance(batch, list)
            out.extend(item.event for item in batch)
            if until_text and any(isinstance(e, TextDelta) for e in out):
                break
    return out


async def cancel_mid_stream(backend: Backend, reply: Reply) -> tuple[float, list[Event]]:
    """Start a run, wait for its first text, cancel it; returns how long the upstream took to see the client
    leave (from the cancel request) and the run's events."""
    manager = RunManager(backend, MemoryRunStore())
    info = await manager.start(HELLO, user_id="u", conversation_id="c")
    sub = await manager.subscribe(info.run_id)
    async with asyncio.timeout(20):
        events = await read_events(sub, until_text=True)
        await reply.sent.wait()  # the upstream has said all it will until the client leaves
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await asyncio.wait_for(manager.cancel(info.run_id), 5)
    await asyncio.wait_for(reply.client_left.wait(), 5)
    assert reply.client_left_at is not None
    async with asyncio.timeout(5):
        events += await read_events(sub)
    await sub.aclose()
    assert events[-1] == FinishEvent("cancelled")
    return reply.client_left_at - asked, events


def texts(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))
