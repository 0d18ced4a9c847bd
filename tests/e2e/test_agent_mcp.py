"""An agent that acts, end to end: a real model (SmolLM2 on llama-cpp-python's server) calls a real MCP server's
tool through the agents backend, every step streamed.

llama.cpp's ``chatml-function-calling`` format shows the tools to the model while streaming only when
``tool_choice`` names one (``auto`` is refused as a streaming choice, ``required`` fails), so the backend's
``tool_choice`` names the tool; the SDK resets it once the tool was called, and the model then answers in text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.backends.conftest import texts
from tests.backends.test_agents import Orders
from tests.conftest import running_server
from tests.llama_server import MODEL, llama_server
from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.base import GenerateOptions, Message, Suspend
from tokenrelay.events import Event, FinishEvent, TextDelta, ToolCallArgsDelta, ToolCallResult, ToolCallStart

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server("--chat_format", "chatml-function-calling") as port:
        yield f"http://127.0.0.1:{port}/v1"


@pytest.mark.timeout(300)  # two model calls on a shared 2-core machine
async def test_the_model_calls_the_mcp_tool_streamed_then_answers(llama_url: str) -> None:
    orders = Orders()
    async with running_server(orders.app()) as url:
        backend = AgentsBackend(
            model=MODEL,
            base_url=llama_url,
            max_retries=0,
            temperature=0.0,
            max_tokens=24,
            instructions="You track orders. Use the tools.",
            mcp_urls=[f"{url}/mcp"],
            tool_choice="lookup_order",
            timeout_s=240,
        )
        events: list[Event] = []
        async with asyncio.timeout(240):
            async for event in backend.stream([Message("user", "Where is my order A-1042?")], GenerateOptions()):
                assert not isinstance(event, Suspend)  # no tool here needs approval
                events.append(event)

    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.name for s in starts] == ["lookup_order"], events
    call_id = starts[0].call_id
    args = [e for e in events if isinstance(e, ToolCallArgsDelta)]
    assert len(args) > 1  # streamed in fragments, as the model wrote them
    assert {a.call_id for a in args} == {call_id}
    order_id = json.loads("".join(a.delta for a in args))["order_id"]
    # The real MCP server ran the tool once, with the model's arguments, and its text is the result.
    assert orders.calls == [order_id]
    results = [e for e in events if isinstance(e, ToolCallResult)]
    assert results == [ToolCallResult(call_id, f"Order {order_id}: shipped on 2025-06-12")]
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert events.index(starts[0]) < events.index(args[0]) < events.index(results[0]) < first_text
    assert texts(events).strip()
    assert events[-1] in (FinishEvent("stop"), FinishEvent("length"))
