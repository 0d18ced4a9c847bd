"""The Relay as a composition root: what it starts, and where a run's conversation rules come from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokenrelay.backends import ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.messages import Message
from tokenrelay.server import Relay, Settings


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    backend = ScriptedBackend([TextDelta("answer"), FinishEvent("stop")])
    relay = Relay(backend, Settings(backend="synthetic", history="memory"))
    async with relay.lifespan():
        yield relay


async def test_a_chat_run_is_saved_to_its_conversation(relay: Relay) -> None:
    info = await relay.start_chat("question", user_id="ann", conversation_id="c")
    await asyncio.wait_for(relay.runs.wait(info.run_id), 5)
    assert info.extra == {}
    saved = await relay.history.load("ann", "c")
    assert [(m.role, m.content) for m in saved] == [("user", "question"), ("assistant", "answer")]


async def test_a_completion_is_marked_stateless_on_the_run_and_never_saved(relay: Relay) -> None:
    info = await relay.start_completion([Message("user", "hi")], user_id="ann")
    await asyncio.wait_for(relay.runs.wait(info.run_id), 5)
    # On the run, in the store: an instance that ends the run (its owner gone) reads it there.
    stored = await relay.store.get(info.run_id)
    assert stored is not None
    assert stored.extra == {"stateless": "1"}
    assert await relay.history.conversations("ann") == []


def test_the_settings_build_what_is_not_given() -> None:
    history = MemoryHistory()
    relay = Relay(ScriptedBackend([]), Settings(backend="synthetic", history="sql"), history=history)
    assert relay.history is history
    assert relay.conversations.history is history
    assert type(relay.store).__name__ == "MemoryRunStore"
