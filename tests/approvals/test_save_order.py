"""A run's answers in the SQL history keep their order whatever order their saves land in: a paused answer saved
late (instance A still saving it when instance B had resumed the run, finished it and saved its final answer) never
comes back after the final answer, nor after a later pause. Two histories on one database stand for the two
instances, the order of the saves the test's own, on SQLite and on PostgreSQL; then two relays sharing a
redis-server of the test's own, the pausing one's save held (by an event) until the other finished the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.approvals.helpers import CALL, approval_script
from tests.own_redis import RedisProcess
from tokenrelay.backends.base import ApprovalDecision
from tokenrelay.events import FinishReason
from tokenrelay.history.base import StoredMessage
from tokenrelay.history.conversation import Conversations
from tokenrelay.history.sql import SQLHistory
from tokenrelay.messages import Part, PausedPart, TextPart
from tokenrelay.runs.base import RunOutcome
from tokenrelay.server import Relay, Settings

USER, CONVERSATION, RUN = "ann", "c1", "run-1"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}", None
    url, schema = request.getfixturevalue("postgres_schema")
    return str(url), str(schema)


@asynccontextmanager
async def two_instances(database: tuple[str, str | None]) -> AsyncIterator[tuple[SQLHistory, SQLHistory]]:
    url, schema = database
    a, b = SQLHistory(url, schema=schema), SQLHistory(url, schema=schema, migrate=False)
    await a.start()
    await b.start()
    try:
        await a.add(USER, CONVERSATION, StoredMessage("user", "delete notes", created_at=1.0))
        yield a, b
    finally:
        await a.close()
        await b.close()


def outcome(text: str, *parts: Part, reason: FinishReason = "stop") -> RunOutcome:
    return RunOutcome(RUN, USER, CONVERSATION, text, reason, None, None, parts=parts)


def paused(seq: int, text: str = "Let me delete it.") -> RunOutcome:
    return outcome(text, TextPart(text), PausedPart("state", "scripted", 9e9, seq))


async def test_a_late_save_of_the_paused_answer_does_not_come_back_after_the_final_one(
    database: tuple[str, str | None],
) -> None:
    async with two_instances(database) as (a, b):
        # B resumed the run, finished it and saved the whole answer; then A's save of the pause lands.
        await Conversations(b).save_answer(outcome("Let me delete it. Done.", TextPart("Let me delete it. Done.")))
        await Conversations(a).save_answer(paused(5))
        for history in (a, b):
            messages = await history.load(USER, CONVERSATION)
            assert [(m.role, m.status, m.content) for m in messages] == [
                ("user", "complete", "delete notes"),
                ("assistant", "complete", "Let me delete it. Done."),
            ]
            assert await history.paused_answer(USER, RUN) is None  # nothing left to restore


async def test_a_later_pause_is_not_replaced_by_an_earlier_one_saved_late(database: tuple[str, str | None]) -> None:
    async with two_instances(database) as (a, b):
        await Conversations(b).save_answer(paused(9, "Let me delete it. And the other."))
        await Conversations(a).save_answer(paused(5))  # the first pause, saved after the second
        found = await b.paused_answer(USER, RUN)
        assert found is not None
        last = found[1].parts[-1]
        assert isinstance(last, PausedPart)
        assert last.seq == 9
        assert [m.status for m in await a.load(USER, CONVERSATION)] == ["complete", "waiting"]
        # In order, each answer takes the place of the one before.
        await Conversations(a).save_answer(paused(12, "Let me delete it. And the other. And more."))
        await Conversations(b).save_answer(outcome("All done.", TextPart("All done.")))
        messages = await a.load(USER, CONVERSATION)
        assert [(m.status, m.content) for m in messages] == [("complete", "delete notes"), ("complete", "All done.")]


async def test_in_one_batch_only_the_latest_answer_of_a_run_is_written(database: tuple[str, str | None]) -> None:
    async with two_instances(database) as (a, _):
        conversations = Conversations(a)
        final = outcome("Done.", TextPart("Done."))
        # Submitted together, the final answer first: one transaction, the pause left out.
        await asyncio.gather(conversations.save_answer(final), conversations.save_answer(paused(5)))
        messages = await a.load(USER, CONVERSATION)
        assert [(m.status, m.content) for m in messages] == [("complete", "delete notes"), ("complete", "Done.")]


class SlowToSavePauses(SQLHistory):
    """The history of an instance that is slow to save a paused answer: the save waits for ``release``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.holding, self.release = asyncio.Event(), asyncio.Event()

    async def add(self, user_id: str, conversation_id: str, message: StoredMessage, *, create: bool = True) -> bool:
        if message.status == "waiting":
            self.holding.set()
            await self.release.wait()
        return await super().add(user_id, conversation_id, message, create=create)


async def test_a_pause_saved_after_another_instance_finished_the_run_leaves_the_final_answer(
    tmp_path: Path, own_redis: RedisProcess
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    settings = Settings(
        backend="synthetic", store="redis", redis_url=own_redis.url, redis_prefix="order:", database_url=url
    )
    slow = SlowToSavePauses(url)
    a = Relay(approval_script(tmp_path / "calls"), settings, history=slow)
    b = Relay(approval_script(tmp_path / "calls"), settings)
    async with a.lifespan(), b.lifespan():
        info = await a.start_chat("delete notes", user_id=USER, conversation_id=None)
        async with asyncio.timeout(20):
            await slow.holding.wait()  # A paused the run in the store and is saving its answer so far
            result = await b.runs.approve(info.run_id, USER, ApprovalDecision(CALL, True))
            assert result.status == "resume"
            await b.runs.wait(info.run_id)  # B drove it to its end and saved the whole answer
            slow.release.set()  # only now does A's save land
            await a.runs.wait(info.run_id)
        for history in (a.history, b.history):
            messages = await history.load(USER, info.conversation_id)
            assert [(m.role, m.status, m.content) for m in messages] == [
                ("user", "complete", "delete notes"),
                ("assistant", "complete", "Let me delete it. Done."),
            ]
            assert await history.paused_answer(USER, info.run_id) is None
