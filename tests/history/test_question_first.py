"""With a shared run store, a run's first event is stored only once its question is: the backend starts at once, but
no reader sees an answer whose question could still be lost — another instance may end the run and save its answer
(an instance killed right after its client's first token). With the in-process store the run and its save live in
the process that wrote the question, after the write: the answer does not wait. Real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from tokenrelay.backends import GenerateOptions, ScriptedBackend
from tokenrelay.events import Event, FinishEvent, TextDelta
from tokenrelay.history.base import StoredMessage
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.messages import Message
from tokenrelay.server import Relay, Settings
from tokenrelay.stores.memory import MemoryRunStore

WAIT_S = 10.0


class HeldHistory(MemoryHistory):
    """Holds every question's write until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage, *, create: bool = True) -> bool:
        if message.role == "user":
            self.holding.set()
            await self.release.wait()
        return await super().add(user_id, conversation_id, message, create=create)


class Prompt(ScriptedBackend):
    """Answers at once; ``answered`` is set as its first event is handed over."""

    def __init__(self) -> None:
        super().__init__([TextDelta("a"), FinishEvent("stop")])
        self.answered = asyncio.Event()

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        async for event in super().stream(messages, options):
            self.answered.set()
            yield event


def _shared(prefix: str) -> Settings:
    return Settings(backend="synthetic", history="memory", store="redis", redis_prefix=prefix)


async def test_the_first_event_waits_for_its_question_and_the_backend_does_not(redis_prefix: str) -> None:
    history, backend = HeldHistory(), Prompt()
    relay = Relay(backend, _shared(redis_prefix), history=history)
    assert relay.store.shared
    async with relay.lifespan():
        info = await relay.start_chat("hi", user_id="u", conversation_id="c1")
        await asyncio.wait_for(history.holding.wait(), WAIT_S)
        await asyncio.wait_for(backend.answered.wait(), WAIT_S)  # the model answered while the question is held
        assert await relay.store.read(info.run_id, 0, 0.3) == []  # and nothing of it is stored meanwhile
        history.release.set()
        first = await relay.store.read(info.run_id, 0, WAIT_S)
        assert first[0].event == TextDelta("a")
        run = relay.runs._runs.get(info.run_id)
        if run is not None:
            await asyncio.wait_for(run.done.wait(), WAIT_S)
        stored = await history.load("u", "c1")
    assert [(m.role, m.content) for m in stored] == [("user", "hi"), ("assistant", "a")]


async def test_a_question_write_that_never_ends_holds_the_answer_back_only_so_long(
    monkeypatch: Any, redis_prefix: str
) -> None:
    history, backend = HeldHistory(), Prompt()
    relay = Relay(backend, _shared(redis_prefix), history=history)
    monkeypatch.setattr(relay.runs._driver, "question_wait_s", 0.5)
    async with relay.lifespan():
        info = await relay.start_chat("hi", user_id="u", conversation_id="c2")
        events = await relay.store.read(info.run_id, 0, WAIT_S)  # not released: given up on after 0.5 s
        assert events[0].event == TextDelta("a")
        history.release.set()


async def test_with_the_in_process_store_the_answer_goes_on_while_its_question_is_written() -> None:
    history, backend = HeldHistory(), Prompt()
    relay = Relay(backend, Settings(backend="synthetic", history="memory"), history=history)
    assert isinstance(relay.store, MemoryRunStore)
    assert not relay.store.shared
    async with relay.lifespan():
        info = await relay.start_chat("hi", user_id="u", conversation_id="c3")
        await asyncio.wait_for(history.holding.wait(), WAIT_S)
        first = await relay.store.read(info.run_id, 0, WAIT_S)  # the question is still held
        assert first[0].event == TextDelta("a")
        history.release.set()
        await asyncio.wait_for(relay.runs.wait(info.run_id), WAIT_S)
        stored = await history.load("u", "c3")
    assert [(m.role, m.content) for m in stored] == [("user", "hi"), ("assistant", "a")]  # the answer after it
