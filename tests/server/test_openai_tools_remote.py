"""Client-side tools through the remote backends, end to end: the official ``openai`` client against a real server
whose backend talks to a replay of each provider's recorded wire bytes — tools out in the provider's form, the
model's calls back as the client's ``tool_calls``, and the next turn's tool messages out in the provider's form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest

from tests.backends import providers
from tests.backends.replay import ReplayServer
from tests.conftest import running_server
from tokenrelay.backends.base import Backend
from tokenrelay.server import Relay, Settings, create_app

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}},
    },
}
TIME: Any = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK: Any = [{"role": "user", "content": "Weather and time in Paris?"}]


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as server:
        yield server


@asynccontextmanager
async def serve(backend: Backend) -> AsyncIterator[openai.AsyncOpenAI]:
    relay = Relay(backend, Settings(backend="synthetic"))
    async with running_server(create_app(relay=relay)) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
            yield client


async def streamed_calls(stream: Any) -> tuple[dict[int, dict[str, str]], str | None, int]:
    """The streamed calls by index (id, name, arguments joined), the finish reason, and how many chunks had calls."""
    calls: dict[int, dict[str, str]] = {}
    finish, chunked = None, 0
    async for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or ():
            chunked += 1
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return calls, finish, chunked


def assistant_turn(calls: dict[int, dict[str, str]]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls.values()
        ],
    }


CHAT_CALLS = {
    0: {"id": "call_Qe4kX9nLr2VbTfW8yJ1sZcDm", "name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'},
    1: {"id": "call_7HnJv0pQa3LsKx5RbYwE2uTg", "name": "get_time", "arguments": '{"timezone":"Europe/Paris"}'},
}


async def test_chat_completions_round_trip(replay: ReplayServer) -> None:
    replay.reply("openai_chat/tool_calls.sse")
    replay.reply("openai_chat/text.sse")
    async with serve(providers.openai_chat(replay)) as client:
        stream = await client.chat.completions.create(
            model="m", messages=ASK, tools=[WEATHER, TIME], tool_choice="required", seed=3, stop=["\n\n"], stream=True
        )
        calls, finish, chunked = await streamed_calls(stream)
        tool_messages: Any = [
            {"role": "tool", "tool_call_id": CHAT_CALLS[0]["id"], "content": "sunny, 21C"},
            {"role": "tool", "tool_call_id": CHAT_CALLS[1]["id"], "content": "14:05"},
        ]
        second = [*ASK, assistant_turn(calls), *tool_messages]
        answer = await client.chat.completions.create(model="m", messages=second, tools=[WEATHER, TIME])
    assert (calls, finish) == (CHAT_CALLS, "tool_calls")
    assert chunked > 2  # the arguments came in fragments, as the upstream sent them
    assert answer.choices[0].message.content == "The capital of France is Paris."
    assert answer.choices[0].finish_reason == "stop"
    first_body, second_body = replay.requests[0].json(), replay.requests[1].json()
    assert first_body["tools"] == [WEATHER, TIME]
    assert (first_body["tool_choice"], first_body["seed"], first_body["stop"]) == ("required", 3, ["\n\n"])
    assert second_body["messages"] == [{"role": "user", "content": "Weather and time in Paris?"}, *second[1:]]


async def test_chat_completions_non_streamed_calls(replay: ReplayServer) -> None:
    replay.reply("openai_chat/tool_calls.sse")
    async with serve(providers.openai_chat(replay)) as client:
        completion = await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER, TIME])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    got = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls]  # type: ignore[union-attr]
    assert got == [(c["id"], c["name"], c["arguments"]) for c in CHAT_CALLS.values()]


CANCEL: Any = {
    "type": "function",
    "function": {
        "name": "cancel_order",
        "description": "Cancel an order that has not shipped.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        "strict": False,
    },
}


async def test_responses_round_trip_in_the_responses_shapes(replay: ReplayServer) -> None:
    replay.reply("openai_responses/cancel_order_call.sse")
    replay.reply("openai_responses/cancel_order_done.sse")
    choice: Any = {"type": "function", "function": {"name": "cancel_order"}}
    async with serve(providers.openai_responses(replay)) as client:
        stream = await client.chat.completions.create(
            model="m", messages=ASK, tools=[CANCEL], tool_choice=choice, parallel_tool_calls=False, stream=True
        )
        calls, finish, _ = await streamed_calls(stream)
        [call] = calls.values()
        second: Any = [*ASK, assistant_turn(calls), {"role": "tool", "tool_call_id": call["id"], "content": "done"}]
        answer = await client.chat.completions.create(
            model="m", messages=second, tools=[CANCEL], response_format={"type": "json_object"}
        )
    assert finish == "tool_calls"
    assert (call["id"], call["name"]) == ("call_Kq7vN2xR8mT4pL9sWd3bYe6Z", "cancel_order")
    assert answer.choices[0].message.content == "Order A-1042 is cancelled."
    first_body, second_body = replay.requests[0].json(), replay.requests[1].json()
    function = CANCEL["function"]
    assert first_body["tools"] == [
        {
            "type": "function",
            "name": "cancel_order",
            "parameters": function["parameters"],
            "strict": False,
            "description": function["description"],
        }
    ]
    assert first_body["tool_choice"] == {"type": "function", "name": "cancel_order"}
    assert first_body["parallel_tool_calls"] is False
    assert second_body["text"] == {"format": {"type": "json_object"}}
    assert second_body["input"][1:] == [
        {"type": "function_call", "call_id": call["id"], "name": "cancel_order", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["id"], "output": "done"},
    ]


async def test_anthropic_round_trip_in_the_messages_shapes(replay: ReplayServer) -> None:
    replay.reply("anthropic/tool_use.sse")
    replay.reply("anthropic/text.sse")
    async with serve(providers.anthropic(replay)) as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=ASK,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            stop="##",
            stream=True,
        )
        calls, finish, _ = await streamed_calls(stream)
        [call] = calls.values()
        second: Any = [*ASK, assistant_turn(calls), {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
        answer = await client.chat.completions.create(model="m", messages=second, tools=[WEATHER])
    assert finish == "tool_calls"
    assert call == {
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "name": "get_weather",
        "arguments": '{"city": "Paris", "unit": "celsius"}',
    }
    assert answer.choices[0].message.content
    first_body, second_body = replay.requests[0].json(), replay.requests[1].json()
    function = WEATHER["function"]
    assert first_body["tools"] == [
        {"name": "get_weather", "input_schema": function["parameters"], "description": function["description"]}
    ]
    assert first_body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert first_body["stop_sequences"] == ["##"]
    assert second_body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": "get_weather",
                    "input": {"city": "Paris", "unit": "celsius"},
                }
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]},
    ]


SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
CANNOT: list[tuple[str, dict[str, Any], str]] = [
    ("openai_chat", {"logprobs": True}, "logprobs"),
    ("openai_responses", {"stop": ["x"]}, "stop"),
    ("openai_responses", {"seed": 1}, "seed"),
    ("anthropic", {"response_format": SCHEMA}, "response_format"),
    ("anthropic", {"seed": 1}, "seed"),
]


@pytest.mark.parametrize(("provider", "fields", "param"), CANNOT)
async def test_what_a_backend_cannot_honour_is_a_400_before_any_upstream_call(
    replay: ReplayServer, provider: str, fields: dict[str, Any], param: str
) -> None:
    backend = getattr(providers, provider)(replay)
    async with serve(backend) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=ASK, extra_body=fields)
    body: Any = caught.value.body
    assert (body["param"], body["code"]) == (param, "unsupported_parameter")
    assert f"the {backend.name} backend" in body["message"]
    assert replay.requests == []
