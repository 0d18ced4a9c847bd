"""A client's tools and output controls in each provider's request form (pure mapping), and the local model's
for real (slow)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import running_server
from tokenrelay.backends._client_tools import anthropic_params, chat_params, llama_params, responses_params
from tokenrelay.backends.base import ClientTools, client_support
from tokenrelay.backends.local import LocalBackend

BARE: Any = {"type": "function", "function": {"name": "ping"}}
SCHEMA: Any = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
JSON_SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}}


def test_nothing_asked_adds_nothing() -> None:
    for mapping in (chat_params, responses_params, anthropic_params, llama_params):
        assert mapping(None) == {}
        assert mapping(ClientTools()) == {}
    assert ClientTools(response_format={"type": "text"}).asked() == []


def test_chat_completions_takes_the_fields_as_they_are() -> None:
    tools = ClientTools(tools=(BARE,), tool_choice="none", parallel_tool_calls=True, stop=("a", "b"), seed=0)
    assert chat_params(tools) == {
        "tools": [BARE],
        "tool_choice": "none",
        "parallel_tool_calls": True,
        "stop": ["a", "b"],
        "seed": 0,
    }


def test_responses_flattens_tools_and_moves_the_format_to_text() -> None:
    params = responses_params(ClientTools(tools=(BARE,), tool_choice="required", response_format=JSON_SCHEMA))
    assert params == {
        # A function without parameters gets an empty object schema; strict as Chat Completions' default.
        "tools": [
            {"type": "function", "name": "ping", "parameters": {"type": "object", "properties": {}}, "strict": False}
        ],
        "tool_choice": "required",
        "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA, "strict": True}},
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "ping"}},
            False,
            {"type": "tool", "name": "ping", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_anthropic_tool_choices(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    params = anthropic_params(ClientTools(tools=(BARE,), tool_choice=choice, parallel_tool_calls=parallel))
    assert params["tools"] == [{"name": "ping", "input_schema": {"type": "object", "properties": {}}}]
    assert params.get("tool_choice") == expected


def test_llama_gets_its_json_grammar_with_the_schema() -> None:
    assert llama_params(ClientTools(response_format=JSON_SCHEMA, stop=("\n",), seed=5)) == {
        "stop": ["\n"],
        "seed": 5,
        "response_format": {"type": "json_object", "schema": SCHEMA},
    }
    assert llama_params(ClientTools(response_format={"type": "json_object"})) == {
        "response_format": {"type": "json_object"}
    }


def test_a_backend_without_supports_supports_nothing() -> None:
    assert client_support(object()) == frozenset()
    assert client_support(LocalBackend()) == frozenset({"response_format", "stop", "seed"})


@pytest.fixture(scope="module")
def local() -> LocalBackend:
    b = LocalBackend(max_tokens=40, seed=7, progress=lambda line: None)
    b.load()
    return b


@pytest.mark.slow
async def test_the_local_model_answers_in_the_schema_stops_and_refuses_tools(local: LocalBackend) -> None:
    import httpx

    from tokenrelay.server import Relay, Settings, create_app

    relay = Relay(local, Settings(backend="local"))
    ask = [{"role": "user", "content": "Is the sky blue? Answer in JSON."}]
    async with running_server(create_app(relay=relay)) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        body = {"model": "m", "messages": ask, "response_format": JSON_SCHEMA, "seed": 1, "max_tokens": 40}
        r = await http.post("/v1/chat/completions", json=body)
        capital = [{"role": "user", "content": "What is the capital of France?"}]
        stopped = await http.post("/v1/chat/completions", json={"model": "m", "messages": capital, "stop": "Paris"})
        refused = await http.post("/v1/chat/completions", json={"model": "m", "messages": ask, "tools": [BARE]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["message"]["content"])["ok"], bool)  # the grammar held it to the schema
    assert stopped.status_code == 200, stopped.text
    assert "Paris" not in stopped.json()["choices"][0]["message"]["content"]
    # llama.cpp's handler for the GGUF's own chat template returns no tool calls: a 400, not a silent drop.
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tools"
    assert "local backend" in refused.json()["error"]["message"]
