"""What the agents backend streams, faithful to the model: how an answer ended, tool results' text and structure,
handoffs apart from tool calls, the model settings on the wire, and messages every Chat Completions server takes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tests.backends.conftest import collect, texts
from tests.backends.replay import ReplayServer
from tests.conftest import running_server
from tokenrelay.backends.agents import AgentsBackend, AgentTranslator
from tokenrelay.backends.agents._model import plain_messages
from tokenrelay.backends.base import BackendError
from tokenrelay.events import FinishEvent, MetadataEvent, ToolCallArgsDelta, ToolCallResult, ToolCallStart

try:  # mcp 2 renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as FastMCP
except ImportError:  # pragma: no cover - mcp 1.x
    from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef]


def backend(replay: ReplayServer, **kwargs: object) -> AgentsBackend:
    options: dict[str, object] = {"model": "gpt-4.1-mini", "base_url": f"{replay.url}/v1", "max_retries": 0}
    return AgentsBackend(**(options | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("api", "fixture"), [("chat", "openai_chat/length.sse"), ("responses", "openai_responses/incomplete.sse")]
)
async def test_an_answer_cut_at_max_tokens_finishes_with_length(replay: ReplayServer, api: str, fixture: str) -> None:
    replay.reply(fixture)
    events = await collect(backend(replay, openai_api=api, max_tokens=16))
    assert texts(events) == "Once upon a time"
    assert events[-1] == FinishEvent("length")


async def test_settings_reach_the_model_request(replay: ReplayServer) -> None:
    replay.reply("openai_chat/text.sse")
    b = backend(
        replay,
        tool_choice="required",
        parallel_tool_calls=False,
        extra_model_settings={"top_p": 0.5, "extra_body": {"repeat_penalty": 1.1}},
    )
    await collect(b)
    body = replay.requests[0].json()
    assert (body["top_p"], body["repeat_penalty"]) == (0.5, 1.1)
    assert "tools" not in body  # without tools the SDK sends no tool choice


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"extra_model_settings": {"no_such_setting": 1}}, "no such model setting: no_such_setting"),
        ({"extra_model_settings": {"top_p": "high"}}, "--agent-model-settings"),
        ({"tool_choice": " "}, "--agent-tool-choice"),
    ],
)
def test_a_bad_model_setting_fails_when_the_backend_is_built(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(BackendError, match=words) as caught:
        AgentsBackend(model="m", base_url="http://127.0.0.1:1/v1", **kwargs)
    assert caught.value.code == "bad_config"


async def test_tool_choice_naming_a_tool_is_sent_as_that_function(replay: ReplayServer) -> None:
    from agents import function_tool

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Where an order is."""
        return "shipped"

    replay.reply("openai_chat/text.sse")
    await collect(backend(replay, tools=[lookup_order], tool_choice="lookup_order", parallel_tool_calls=False))
    body = replay.requests[0].json()
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup_order"}}
    assert body["parallel_tool_calls"] is False


async def test_an_mcp_tools_structured_content_is_kept_beside_its_text(replay: ReplayServer) -> None:
    server = FastMCP("orders")

    @server.tool()
    def lookup_order(order_id: str) -> dict[str, str]:
        """Where an order is."""
        return {"order_id": order_id, "status": "shipped"}

    replay.reply("agents/mcp_tool_call.sse")
    replay.reply("agents/mcp_final.sse")
    async with running_server(server.streamable_http_app()) as url:
        events = await collect(backend(replay, mcp_urls=[f"{url}/mcp"]))
    call_id = "chatcmpl-tool-4f8a2c6e1b3d4f5a9c7e0b2d4f6a8c1e"
    result = next(e for e in events if isinstance(e, ToolCallResult))
    assert json.loads(result.output) == {"order_id": "A-1042", "status": "shipped"}  # the tool's own text
    meta = next(e for e in events if isinstance(e, MetadataEvent))
    assert meta == MetadataEvent(
        {"tool_call_id": call_id, "structured_content": {"order_id": "A-1042", "status": "shipped"}}
    )
    assert events.index(result) + 1 == events.index(meta)
    # The model got the text as a plain string.
    tool_message = next(m for m in replay.requests[1].json()["messages"] if m["role"] == "tool")
    assert json.loads(tool_message["content"]) == {"order_id": "A-1042", "status": "shipped"}


async def test_a_handoff_is_not_shown_as_a_tool_call(replay: ReplayServer) -> None:
    from agents import Agent

    billing = Agent(name="Billing", instructions="You answer billing questions.", handoff_description="invoices")
    replay.reply("agents/handoff.sse")
    replay.reply("agents/billing_answer.sse")
    events = await collect(backend(replay, handoffs=[billing]))
    assert not [e for e in events if isinstance(e, ToolCallStart | ToolCallArgsDelta | ToolCallResult)]
    assert MetadataEvent({"agent": "Billing", "previous_agent": "Assistant"}) in events


def tool_output(call_id: str, output: object, custom: dict[str, Any] | None = None) -> Any:
    item = SimpleNamespace(raw_item={"call_id": call_id}, output=output, custom_data=custom)
    return SimpleNamespace(type="run_item_stream_event", name="tool_output", item=item)


def test_tool_output_items_become_their_text() -> None:
    t = AgentTranslator("Assistant", denied={"c3"})
    two = [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]
    assert t.feed(tool_output("c1", two)) == [ToolCallResult("c1", "line one\nline two")]
    assert t.feed(tool_output("c2", {"type": "image", "image_url": "data:..."})) == [ToolCallResult("c2", "[image]")]
    assert t.feed(tool_output("c3", "no")) == [ToolCallResult("c3", "no", is_error=True)]
    assert t.feed(tool_output("c4", {"rows": 2})) == [ToolCallResult("c4", '{"rows": 2}')]
    # No text at all: the structured content is the result; text that it only wraps is not repeated.
    structured = {"structured_content": {"rows": 2}}
    assert t.feed(tool_output("c5", [], structured)) == [ToolCallResult("c5", '{"rows": 2}')]
    wrapped = {"structured_content": {"result": "ok"}}
    assert t.feed(tool_output("c6", {"type": "text", "text": "ok"}, wrapped)) == [ToolCallResult("c6", "ok")]


def test_messages_take_the_form_every_chat_server_accepts() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    ]
    assert plain_messages(messages) == [
        messages[0],
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "a\nb"},
        messages[3],  # not only text: left as it is
    ]


def test_the_agent_settings_come_from_flags_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenrelay.server.factory import build_backend
    from tokenrelay.server.settings import Settings

    monkeypatch.setenv("TOKENRELAY_APPROVAL_TOOLS", '["lookup_order", "mcp:http://h/mcp"]')
    settings = Settings(
        backend="agents",
        model="m",
        base_url="http://h/v1",
        agent_tool_choice="lookup_order",
        agent_parallel_tool_calls=False,
        agent_model_settings={"top_p": 0.5},
    )
    backend = build_backend(settings)
    assert isinstance(backend, AgentsBackend)
    assert backend.settings.tool_choice == "lookup_order"
    assert backend.settings.parallel_tool_calls is False
    assert backend.settings.extra == {"top_p": 0.5}
    assert backend.approvals.tools == {"lookup_order"}
    assert backend.approvals.servers == {"http://h/mcp"}
    assert backend.describe()["approval_tools"] is True
