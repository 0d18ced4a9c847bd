"""The agents backend: a real Agents SDK run, its model replayed, its tools on a real MCP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Literal

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.backends.conftest import CANCEL_BUDGET_S, cancel_mid_stream, run, texts
from tests.backends.replay import ReplayServer
from tests.conftest import running_server
from tokenrelay.backends.agents import AgentsBackend, parse_headers
from tokenrelay.backends.base import BackendError
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    MetadataEvent,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)

try:  # mcp 2 renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as FastMCP
except ImportError:  # pragma: no cover - mcp 1.x
    from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef]


class Orders:
    """A real MCP server over Streamable HTTP with one tool, recording its calls and the headers it was sent."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self.server = FastMCP("orders")

        @self.server.tool()
        def lookup_order(order_id: str) -> str:
            """Where an order is: its shipping status and date."""
            self.calls.append(order_id)
            return f"Order {order_id}: shipped on 2025-06-12"

    def app(self) -> ASGIApp:
        inner = self.server.streamable_http_app()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await inner(scope, receive, send)

        return app


@pytest.fixture
async def orders() -> AsyncIterator[Orders]:
    orders = Orders()
    async with running_server(orders.app()) as url:
        orders.url = f"{url}/mcp"
        yield orders


def backend(replay: ReplayServer, **kwargs: object) -> AgentsBackend:
    options: dict[str, object] = {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "base_url": f"{replay.url}/v1",
        "max_retries": 0,
        "instructions": "You track orders. Use the tools.",
        "mcp_timeout_s": 5.0,
    }
    return AgentsBackend(**(options | kwargs))  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_model_calls_an_mcp_tool_and_answers_with_its_result(replay: ReplayServer, orders: Orders) -> None:
    replay.reply("agents/mcp_tool_call.sse")
    replay.reply("agents/mcp_final.sse")
    events = await run(backend(replay, mcp_urls=[orders.url]))

    assert orders.calls == ["A-1042"]  # the real MCP server ran the tool
    call_id = "chatcmpl-tool-4f8a2c6e1b3d4f5a9c7e0b2d4f6a8c1e"
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(call_id, "lookup_order")]
    start = events.index(ToolCallStart(call_id, "lookup_order"))
    # The arguments stream in the fragments the model wrote them in, not as one piece once the call is complete.
    args = [e for e in events if isinstance(e, ToolCallArgsDelta)]
    assert args == [ToolCallArgsDelta(call_id, '{"order_id": '), ToolCallArgsDelta(call_id, '"A-1042"}')]
    assert json.loads("".join(a.delta for a in args)) == {"order_id": "A-1042"}
    result = next(e for e in events if isinstance(e, ToolCallResult))
    # The MCP tool's text, not its content item as JSON.
    assert result == ToolCallResult(call_id, "Order A-1042: shipped on 2025-06-12")
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert start < events.index(args[0]) < events.index(args[-1]) < events.index(result) < first_text
    assert texts(events) == "Order A-1042 shipped on 2025-06-12."
    assert events[-2:] == [UsageEvent(212 + 268, 24 + 19), FinishEvent("stop")]

    # The model was offered the MCP tool, and its second call carried the tool's output back.
    first, second = (r.json() for r in replay.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order"]
    assert first["messages"][0] == {"role": "system", "content": "You track orders. Use the tools."}
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_messages[0]["tool_call_id"] == call_id
    assert "shipped on 2025-06-12" in json.dumps(tool_messages[0]["content"])


async def test_mcp_headers_reach_the_mcp_server(replay: ReplayServer, orders: Orders) -> None:
    replay.reply("openai_chat/text.sse")
    events = await run(backend(replay, mcp_urls=[orders.url], mcp_headers={"Authorization": "Bearer mcp-token"}))
    assert events[-1] == FinishEvent("stop")
    assert orders.headers  # initialize, tools/list, ...
    assert all(h.get("authorization") == "Bearer mcp-token" for h in orders.headers)


async def test_responses_api_model(replay: ReplayServer) -> None:
    replay.reply("openai_responses/text.sse")
    events = await run(backend(replay, openai_api="responses"))
    assert replay.requests[0].path == "/v1/responses"
    assert texts(events) == "The capital of France is Paris."
    assert events[-2:] == [UsageEvent(31, 8), FinishEvent("stop")]


async def test_request_carries_model_and_settings(replay: ReplayServer) -> None:
    replay.reply("openai_chat/text.sse")
    events = await run(backend(replay, temperature=0.3, max_tokens=50))
    assert texts(events) == "The capital of France is Paris."
    body = replay.requests[0].json()
    assert body["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert body["stream"] is True
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 50
    assert body["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}


async def test_a_handoff_is_a_metadata_event(replay: ReplayServer) -> None:
    from agents import Agent

    billing = Agent(name="Billing", instructions="You answer billing questions.", handoff_description="invoices")
    replay.reply("agents/handoff.sse")
    replay.reply("agents/billing_answer.sse")
    events = await run(backend(replay, handoffs=[billing]))
    switch = [e for e in events if isinstance(e, MetadataEvent)]
    assert switch == [MetadataEvent({"agent": "Billing", "previous_agent": "Assistant"})]
    assert texts(events) == "Your last invoice was paid."
    assert events.index(switch[0]) < next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert events[-1] == FinishEvent("stop")
    # The handoff agent, which has no model of its own, spoke to the same server.
    assert len(replay.requests) == 2
    assert replay.requests[1].json()["messages"][0]["content"].startswith("You answer billing questions.")


async def test_unreachable_mcp_server_is_a_clear_error_not_a_hang(replay: ReplayServer) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    async with asyncio.timeout(5):
        events = await run(backend(replay, mcp_urls=[url]))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("mcp_unavailable", True)
    assert url in error.message
    assert events[-1] == FinishEvent("error")
    assert replay.requests == []  # the model was never called


async def test_silent_mcp_server_times_out_with_a_clear_error(replay: ReplayServer) -> None:
    hold = asyncio.Event()

    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await hold.wait()
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    try:
        started = asyncio.get_running_loop().time()
        events = await run(backend(replay, mcp_urls=[url], mcp_timeout_s=0.5))
        took = asyncio.get_running_loop().time() - started
    finally:
        hold.set()
        server.close()
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert error.code == "mcp_unavailable"
    assert url in error.message
    assert took < 3


async def test_model_http_error_is_an_error_event(replay: ReplayServer) -> None:
    replay.reply("openai_chat/error_401.json", status=401)
    events = await run(backend(replay))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("auth_error", False)
    assert error.message.startswith("agents: HTTP 401")


async def test_too_many_turns_is_an_error_event(replay: ReplayServer, orders: Orders) -> None:
    replay.reply("agents/mcp_tool_call.sse")
    replay.reply("agents/mcp_tool_call.sse")
    events = await run(backend(replay, mcp_urls=[orders.url], max_turns=1))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert error.code == "max_turns"
    assert "--agent-max-turns" in error.message


async def test_cancelling_the_run_cancels_the_sdk_run_and_closes_the_model_response(
    replay: ReplayServer, orders: Orders, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.result import RunResultStreaming

    modes: list[str] = []
    cancel = RunResultStreaming.cancel

    def spy(self: RunResultStreaming, mode: Literal["immediate", "after_turn"] = "immediate") -> None:
        modes.append(mode)
        cancel(self, mode)

    monkeypatch.setattr(RunResultStreaming, "cancel", spy)
    reply = replay.reply("openai_chat/partial.sse", then="hold")
    b = backend(replay, mcp_urls=[orders.url])
    took, events = await cancel_mid_stream(b, reply)
    assert took < CANCEL_BUDGET_S, f"the upstream saw the client leave after {took * 1000:.0f} ms"
    assert texts(events) == "The capital of"
    assert b.stats.cancelled == 1
    assert modes[0] == "immediate"  # the SDK's own cancel, not just a cancelled task


def test_tracing_is_off_without_an_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert not AgentsBackend(model="m", base_url="http://127.0.0.1:1/v1").tracing
    assert AgentsBackend(model="gpt-4.1", api_key="sk-test").tracing  # OpenAI itself, with a key
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert AgentsBackend(model="m", base_url="http://127.0.0.1:1/v1").tracing


def test_mcp_headers_parse_from_name_value_lines() -> None:
    assert parse_headers(["Authorization: Bearer abc", "X-Tenant:  acme "]) == {
        "Authorization": "Bearer abc",
        "X-Tenant": "acme",
    }
    with pytest.raises(BackendError, match="--mcp-header expects 'Name: value'"):
        parse_headers(["no colon here"])
