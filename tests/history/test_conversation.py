"""The conversation rules: the model's context, regenerate, adopting a client's transcript, saving answers."""

from __future__ import annotations

from tests.history.helpers import msg
from tokenrelay.events import ErrorEvent, FinishReason, UsageEvent
from tokenrelay.history.conversation import STATELESS, Conversations, context, is_stateless
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.messages import (
    ErrorPart,
    FinishPart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UsagePart,
)
from tokenrelay.runs import RunOutcome


def outcome(
    text: str,
    reason: FinishReason = "stop",
    *,
    error: ErrorEvent | None = None,
    usage: UsageEvent | None = None,
    extra: dict[str, str] | None = None,
) -> RunOutcome:
    return RunOutcome("r1", "ann", "c", text, reason, usage, error, extra=extra or {})


def turns(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


async def conversation(*earlier: tuple[str, str]) -> tuple[Conversations, MemoryHistory]:
    """Ann's conversation ``c``, holding the ``(role, content)`` turns ``earlier``."""
    history = MemoryHistory()
    for role, content in earlier:
        await history.add("ann", "c", msg(role, content))
    return Conversations(history), history


async def contents(history: MemoryHistory) -> list[str]:
    return [m.content for m in await history.load("ann", "c")]


def test_the_context_leaves_out_empty_answers_and_keeps_the_latest_of_answers_in_a_row() -> None:
    earlier = [
        msg("user", "q1"),
        msg("assistant", "first try"),
        msg("assistant", "", status="failed"),
        msg("assistant", "second try"),
        msg("user", "q2"),
        msg("assistant", "", status="cancelled"),
    ]
    assert turns(context(earlier)) == [("user", "q1"), ("assistant", "second try"), ("user", "q2")]
    assert context([]) == []


async def test_a_question_is_stored_and_asked_with_the_earlier_turns() -> None:
    conversations, history = await conversation()
    assert turns(await conversations.ask("ann", "c", "first")) == [("user", "first")]
    await conversations.save_answer(outcome("answer"))
    asked = await conversations.ask("ann", "c", "second")
    assert turns(asked) == [("user", "first"), ("assistant", "answer"), ("user", "second")]
    assert await contents(history) == ["first", "answer", "second"]


async def test_regenerate_asks_the_last_question_again_without_storing_it_twice() -> None:
    conversations, history = await conversation(("user", "q"), ("assistant", "a1"), ("assistant", "a2"))
    assert turns(await conversations.ask("ann", "c", "q", regenerate=True)) == [("user", "q")]
    assert await contents(history) == ["q", "a1", "a2"]


async def test_regenerate_of_another_question_keeps_the_answer_before_it() -> None:
    conversations, history = await conversation(("user", "one"), ("assistant", "first answer"))
    asked = await conversations.ask("ann", "c", "two", regenerate=True)
    assert turns(asked) == [("user", "one"), ("assistant", "first answer"), ("user", "two")]
    assert await contents(history) == ["one", "first answer", "two"]


async def test_a_clients_transcript_is_adopted_only_when_the_server_has_none() -> None:
    conversations, history = await conversation()
    transcript = [Message("user", "hi"), Message("assistant", ""), Message("assistant", "hello")]
    await conversations.adopt("ann", "c", transcript)
    assert [(m.role, m.content) for m in await history.load("ann", "c")] == [("user", "hi"), ("assistant", "hello")]
    await conversations.adopt("ann", "c", [Message("user", "another story")])
    assert len(await history.load("ann", "c")) == 2


async def test_every_ending_is_saved_with_its_status_error_and_usage() -> None:
    conversations, history = await conversation(("user", "q"))
    await conversations.save_answer(outcome("done", usage=UsageEvent(3, 4)))
    await conversations.save_answer(outcome("half", "cancelled"))
    await conversations.save_answer(outcome("", "error", error=ErrorEvent("model_error", "it broke")))
    await conversations.save_answer(outcome("cut", "length"))
    # An error the backend reported, then a finish: the answer failed, whatever the finish said.
    await conversations.save_answer(outcome("so far", "stop", error=ErrorEvent("rate_limited", "slow", True)))
    saved = (await history.load("ann", "c"))[1:]
    assert [(m.role, m.content, m.status, m.error_code, m.output_tokens, m.run_id) for m in saved] == [
        ("assistant", "done", "complete", None, 4, "r1"),
        ("assistant", "half", "cancelled", None, None, "r1"),
        ("assistant", "", "failed", "model_error", None, "r1"),
        ("assistant", "cut", "complete", None, None, "r1"),
        ("assistant", "so far", "failed", "rate_limited", None, "r1"),
    ]
    assert [m.parts for m in saved] == [
        (TextPart("done"), UsagePart(3, 4), FinishPart("stop")),
        (TextPart("half"), FinishPart("cancelled")),
        (ErrorPart("model_error", "it broke"), FinishPart("error")),
        (TextPart("cut"), FinishPart("length")),
        (TextPart("so far"), ErrorPart("rate_limited", "slow", True), FinishPart("stop")),
    ]


async def test_an_answer_is_saved_with_its_tool_turns_and_given_back_to_the_model() -> None:
    conversations, history = await conversation()
    await conversations.ask("ann", "c", "weather?")
    said = (
        ReasoningPart("hmm"),
        TextPart("Checking."),
        ToolCallPart("c1", "weather", "{}"),
        ToolResultPart("c1", "sun"),
    )
    await conversations.save_answer(RunOutcome("r1", "ann", "c", "Checking.", "tool_calls", None, None, parts=said))
    [_, answer] = await history.load("ann", "c")
    assert answer.parts == (*said, FinishPart("tool_calls"))
    asked = await conversations.ask("ann", "c", "and tomorrow?")
    assert asked[1] == Message("assistant", "Checking.", (*said, FinishPart("tool_calls")))


async def test_an_answer_whose_conversation_was_deleted_does_not_bring_it_back() -> None:
    conversations, history = await conversation()
    await conversations.ask("ann", "c", "question")
    assert await history.delete("ann", "c")  # deleted while its run was going
    await conversations.save_answer(outcome("the answer"))
    assert await history.load("ann", "c") == []
    assert await history.conversations("ann") == []


def test_the_context_keeps_an_answer_of_tool_calls_only_and_drops_one_stopped_before_its_first_token() -> None:
    calls_only = msg("assistant", "", parts=(ToolCallPart("c1", "search", "{}"), FinishPart("tool_calls")))
    stopped = msg("assistant", "", status="cancelled", parts=(FinishPart("cancelled"),))
    earlier = [msg("user", "q1"), calls_only, msg("user", "q2"), stopped]
    assert [m.parts for m in context(earlier)] == [(), calls_only.parts, ()]


async def test_a_stateless_run_is_not_saved_by_whichever_instance_ends_it() -> None:
    history = MemoryHistory()
    # Another instance's Conversations: all it knows of the run is the run's own extras.
    await Conversations(history).save_answer(outcome("not history", extra=dict(STATELESS)))
    assert await history.conversations("ann") == []
    assert is_stateless(STATELESS)
    assert not is_stateless({})
    assert not is_stateless({"stateless": "0"})
