"""Deleting a conversation stops its runs: every one this instance drives, and the latest one elsewhere."""

from __future__ import annotations

import asyncio

from tests.conftest import collect
from tests.runs.helpers import Outcomes
from tokenrelay.backends import Message, Pause, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.runs import RunManager
from tokenrelay.stores import MemoryRunStore

HELLO = [Message("user", "hello")]


async def test_cancel_conversation_stops_that_conversation_s_runs_and_no_other() -> None:
    outcomes = Outcomes()
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    manager = RunManager(backend, MemoryRunStore(), on_finish=outcomes)
    mine = [await manager.start(HELLO, user_id="ann", conversation_id="c1") for _ in range(2)]
    other_conversation = await manager.start(HELLO, user_id="ann", conversation_id="c2")
    other_user = await manager.start(HELLO, user_id="bob", conversation_id="c1")
    assert await asyncio.wait_for(manager.cancel_conversation("ann", "c1"), 5) == 2
    for info in mine:
        events = await asyncio.wait_for(collect(manager, info.run_id), 2)
        assert events[-1].event == FinishEvent("cancelled")
    assert {o.run_id for o in outcomes} == {info.run_id for info in mine}
    assert manager.active_runs == 2
    assert await manager.cancel_conversation("ann", "c1") == 0  # nothing left to stop
    await manager.shutdown()
    assert {o.run_id for o in outcomes} >= {other_conversation.run_id, other_user.run_id}


class SharedStore(MemoryRunStore):
    """A memory store that, like a shared one, says another instance drives a run and passes the cancel on."""

    def __init__(self) -> None:
        super().__init__()
        self.owner: RunManager | None = None
        self.asked: list[str] = []

    async def request_cancel(self, run_id: str) -> bool:
        self.asked.append(run_id)
        assert self.owner is not None
        self.owner.cancel_requested(run_id)
        return True


async def test_cancel_conversation_asks_for_the_chat_s_latest_run_when_another_instance_drives_it() -> None:
    store = SharedStore()
    owner = store.owner = RunManager(ScriptedBackend([TextDelta("a"), Pause(60)]), store)
    info = await owner.start(HELLO, user_id="ann", conversation_id="chat-1")
    await store.chat_run_index().set("ann", "chat-1", info.run_id)
    other = RunManager(ScriptedBackend([]), store)
    assert await asyncio.wait_for(other.cancel_conversation("ann", "chat-1"), 5) == 1
    assert store.asked == [info.run_id]
    await asyncio.wait_for(owner.wait(info.run_id), 2)
    events = await collect(other, info.run_id)
    assert events[-1].event == FinishEvent("cancelled")
    assert await other.cancel_conversation("bob", "chat-1") == 0  # another user's chat is not bob's to stop
    assert store.asked == [info.run_id]
