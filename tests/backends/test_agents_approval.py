"""Tool approval in the agents backend: a call that needs a person's answer stops the run (nothing runs), and the
run goes on from its saved text in another backend object, the tool run once if approved, refused if not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence

import pytest
from agents import FunctionTool, function_tool

from tests.backends.replay import ReplayServer
from tests.backends.test_agents import Orders, orders  # noqa: F401 (the fixture)
from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.base import ApprovalDecision, BackendError, GenerateOptions, Message, Resumable, Suspend
from tokenrelay.events import (
    Event,
    FinishEvent,
    TextDelta,
    ToolApprovalRequest,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)

CANCEL = [Message("user", "Please cancel order A-1042.")]
CALL_ID = "call_Kq7vN2xR8mT4pL9sWd3bYe6Z"  # openai_responses/cancel_order_call.sse
MCP_CALL_ID = "chatcmpl-tool-4f8a2c6e1b3d4f5a9c7e0b2d4f6a8c1e"  # agents/mcp_tool_call.sse


class Canceller:
    """A function tool that records each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

        @function_tool
        def cancel_order(order_id: str) -> str:
            """Cancel an order that has not shipped."""
            self.calls.append(order_id)
            return f"Order {order_id} cancelled"

        self.tool: FunctionTool = cancel_order


def responses_backend(replay: ReplayServer, tool: FunctionTool, **kwargs: object) -> AgentsBackend:
    options: dict[str, object] = {
        "model": "gpt-4.1-mini",
        "base_url": f"{replay.url}/v1",
        "openai_api": "responses",
        "max_retries": 0,
        "instructions": "You manage orders. Use the tools.",
        "tools": [tool],
        "approval_tools": ["cancel_order"],
    }
    return AgentsBackend(**(options | kwargs))  # type: ignore[arg-type]


async def drain(stream: AsyncGenerator[Event | Suspend, None]) -> list[Event | Suspend]:
    out: list[Event | Suspend] = []
    async with asyncio.timeout(20):
        async for item in stream:
            out.append(item)
    return out


def suspended(items: Sequence[Event | Suspend]) -> str:
    """The saved run a stream ended with (its last item)."""
    assert isinstance(items[-1], Suspend), items[-1]
    assert not any(isinstance(i, Suspend) for i in items[:-1])
    assert not any(isinstance(i, FinishEvent) for i in items)
    return items[-1].state


async def test_a_call_that_needs_approval_stops_the_run_before_the_tool_runs(replay: ReplayServer) -> None:
    tool = Canceller()
    replay.reply("openai_responses/cancel_order_call.sse")
    backend = responses_backend(replay, tool.tool)
    assert isinstance(backend, Resumable)
    items = await drain(backend.stream(CANCEL, GenerateOptions()))
    state = suspended(items)
    assert tool.calls == []  # not run: it waits for a person
    assert len(replay.requests) == 1  # and no model call is open or made
    request = ToolApprovalRequest(CALL_ID, "cancel_order", '{"order_id":"A-1042"}')
    # The call streamed as the model wrote it, then the request, the tokens so far, and the suspension.
    assert items[0] == ToolCallStart(CALL_ID, "cancel_order")
    assert "".join(i.delta for i in items if isinstance(i, ToolCallArgsDelta)) == '{"order_id":"A-1042"}'
    assert items[-3:] == [UsageEvent(71, 18), request, Suspend(state)]
    assert json.loads(state)["run_state"]  # plain JSON text, to keep anywhere


async def test_approved_the_tool_runs_once_and_the_model_gets_its_output(replay: ReplayServer) -> None:
    tool = Canceller()
    replay.reply("openai_responses/cancel_order_call.sse")
    replay.reply("openai_responses/cancel_order_done.sse")
    state = suspended(await drain(responses_backend(replay, tool.tool).stream(CANCEL, GenerateOptions())))

    # Resumed from the text alone, by another backend object (another process would do the same).
    items = await drain(responses_backend(replay, tool.tool).resume(state, [ApprovalDecision(CALL_ID, True)]))
    assert tool.calls == ["A-1042"]
    assert items[0] == ToolCallResult(CALL_ID, "Order A-1042 cancelled")
    assert not any(isinstance(i, ToolCallStart) for i in items)  # its start was sent before the pause
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == "Order A-1042 is cancelled."
    assert items[-2:] == [UsageEvent(104, 9), FinishEvent("stop")]  # this part's tokens only
    outputs = [i for i in replay.requests[1].json()["input"] if i.get("type") == "function_call_output"]
    assert outputs == [{"call_id": CALL_ID, "output": "Order A-1042 cancelled", "type": "function_call_output"}]


async def test_denied_the_tool_never_runs_and_the_model_is_told_why(replay: ReplayServer) -> None:
    tool = Canceller()
    replay.reply("openai_responses/cancel_order_call.sse")
    replay.reply("openai_responses/cancel_order_denied.sse")
    state = suspended(await drain(responses_backend(replay, tool.tool).stream(CANCEL, GenerateOptions())))
    decision = ApprovalDecision(CALL_ID, False, "the customer changed their mind")
    items = await drain(responses_backend(replay, tool.tool).resume(state, [decision]))
    denial = "The user denied this tool call. Reason: the customer changed their mind"
    assert tool.calls == []
    assert items[0] == ToolCallResult(CALL_ID, denial, is_error=True)
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == "I left order A-1042 as it is."
    assert items[-1] == FinishEvent("stop")
    outputs = [i for i in replay.requests[1].json()["input"] if i.get("type") == "function_call_output"]
    assert outputs == [{"call_id": CALL_ID, "output": denial, "type": "function_call_output"}]


async def test_a_resume_must_answer_exactly_the_pending_calls(replay: ReplayServer) -> None:
    tool = Canceller()
    replay.reply("openai_responses/cancel_order_call.sse")
    state = suspended(await drain(responses_backend(replay, tool.tool).stream(CANCEL, GenerateOptions())))
    for decisions, words in [
        ([], "no decision for " + CALL_ID),
        ([ApprovalDecision("call_other", True)], "call_other"),
    ]:
        with pytest.raises(BackendError) as caught:
            await drain(responses_backend(replay, tool.tool).resume(state, decisions))
        assert caught.value.code == "bad_request"
        assert words in caught.value.message
    with pytest.raises(BackendError, match="saved state is unreadable"):
        await drain(responses_backend(replay, tool.tool).resume("{not json", []))
    assert tool.calls == []
    assert len(replay.requests) == 1


async def test_a_tool_not_named_runs_without_asking(replay: ReplayServer) -> None:
    tool = Canceller()
    replay.reply("openai_responses/cancel_order_call.sse")
    replay.reply("openai_responses/cancel_order_done.sse")
    items = await drain(responses_backend(replay, tool.tool, approval_tools=[]).stream(CANCEL, GenerateOptions()))
    assert tool.calls == ["A-1042"]
    assert not any(isinstance(i, ToolApprovalRequest | Suspend) for i in items)
    assert items[-1] == FinishEvent("stop")


def mcp_backend(replay: ReplayServer, orders: Orders, approval: str) -> AgentsBackend:  # noqa: F811
    return AgentsBackend(
        model="Qwen/Qwen2.5-7B-Instruct",
        base_url=f"{replay.url}/v1",
        max_retries=0,
        instructions="You track orders. Use the tools.",
        mcp_urls=[orders.url],
        mcp_timeout_s=5.0,
        approval_tools=[approval],
    )


@pytest.mark.parametrize("approval", ["lookup_order", "*", "mcp:{url}"])
async def test_an_mcp_tool_waits_and_runs_exactly_once_when_approved(
    replay: ReplayServer,
    orders: Orders,  # noqa: F811
    approval: str,
) -> None:
    replay.reply("agents/mcp_tool_call.sse")
    replay.reply("agents/mcp_final.sse")
    items = await drain(mcp_backend(replay, orders, approval.format(url=orders.url)).stream(CANCEL, GenerateOptions()))
    state = suspended(items)
    assert ToolApprovalRequest(MCP_CALL_ID, "lookup_order", '{"order_id": "A-1042"}') in items
    assert orders.calls == []  # the MCP server was not reached

    resumed = await drain(mcp_backend(replay, orders, "*").resume(state, [ApprovalDecision(MCP_CALL_ID, True)]))
    assert orders.calls == ["A-1042"]
    assert resumed[0] == ToolCallResult(MCP_CALL_ID, "Order A-1042: shipped on 2025-06-12")
    assert resumed[-1] == FinishEvent("stop")


async def test_a_denied_mcp_tool_is_never_reached(replay: ReplayServer, orders: Orders) -> None:  # noqa: F811
    replay.reply("agents/mcp_tool_call.sse")
    replay.reply("agents/mcp_final.sse")
    state = suspended(await drain(mcp_backend(replay, orders, "*").stream(CANCEL, GenerateOptions())))
    resumed = await drain(mcp_backend(replay, orders, "*").resume(state, [ApprovalDecision(MCP_CALL_ID, False)]))
    assert orders.calls == []
    assert resumed[0] == ToolCallResult(MCP_CALL_ID, "The user denied this tool call.", is_error=True)
    tool_messages = [m for m in replay.requests[1].json()["messages"] if m["role"] == "tool"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": MCP_CALL_ID, "content": "The user denied this tool call."}
    ]


@pytest.mark.parametrize("entry", ["", "mcp:", "  "])
def test_a_bad_approval_entry_is_a_clear_error(entry: str) -> None:
    with pytest.raises(BackendError, match="--approval-tools takes a tool name, mcp:<MCP server URL> or"):
        AgentsBackend(model="m", base_url="http://127.0.0.1:1/v1", approval_tools=[entry])
