"""Client-side tools on ``/v1/chat/completions``, the route's logic: the official ``openai`` client against a real
server over a scripted backend that declares what it supports."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import running_server
from tokenrelay.backends import ScriptedBackend
from tokenrelay.backends._client_tools import CHAT_SUPPORTS
from tokenrelay.backends.base import Backend, ClientTools, GenerateOptions, Suspend
from tokenrelay.events import (
    Event,
    FinishEvent,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
)
from tokenrelay.messages import Message, TextPart, ToolCallPart, ToolResultPart
from tokenrelay.server import Relay, Settings, create_app

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]
CALLING = [
    ToolCallStart("call_1", "get_weather"),
    ToolCallArgsDelta("call_1", '{"city": '),
    ToolCallArgsDelta("call_1", '"Paris"}'),
    FinishEvent("tool_calls"),
]


class ToolScripted(ScriptedBackend):
    """A scripted backend that takes the client's tools (as Chat Completions does) and keeps the options it got."""

    supports = CHAT_SUPPORTS

    def __init__(self, script: list[Any]) -> None:
        super().__init__(script)
        self.options: list[GenerateOptions] = []

    async def stream(
        self, messages: Sequence[Message], options: GenerateOptions
    ) -> AsyncGenerator[Event | Suspend, None]:
        self.options.append(options)
        async for item in super().stream(messages, options):
            yield item


@asynccontextmanager
async def serve(backend: Backend) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    relay = Relay(backend, Settings(backend="synthetic"))
    async with running_server(create_app(relay=relay)) as url:
        async with (
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
            httpx.AsyncClient(base_url=url, timeout=20) as http,
        ):
            yield client, http


async def test_the_models_calls_stream_as_the_clients_and_the_fields_reach_the_backend() -> None:
    backend = ToolScripted(CALLING)
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    async with serve(backend) as (client, _):
        stream = await client.chat.completions.create(
            model="m",
            messages=ASK,
            tools=[WEATHER],
            tool_choice="auto",
            parallel_tool_calls=False,
            response_format=response_format,
            stop="END",
            seed=7,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    # As OpenAI sends them: the id and name first, then the arguments in fragments.
    assert [(d[0].index, d[0].id, d[0].function and d[0].function.name) for d in calls] == [
        (0, "call_1", "get_weather"),
        (0, None, None),
        (0, None, None),
    ]
    assert "".join((d[0].function.arguments or "") for d in calls if d[0].function) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert backend.options[0].client_tools == ClientTools(
        tools=(WEATHER,),
        tool_choice="auto",
        parallel_tool_calls=False,
        response_format=response_format,
        stop=("END",),
        seed=7,
    )


async def test_non_streamed_calls_are_message_tool_calls() -> None:
    async with serve(ToolScripted([TextDelta("Checking."), *CALLING])) as (client, _):
        completion = await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')


async def test_the_next_turn_gives_the_backend_the_calls_and_their_results() -> None:
    backend = ToolScripted([TextDelta("Sunny in Paris, 3am in Tokyo."), FinishEvent("stop")])
    messages: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"P"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "3am"},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "user", "content": "Thanks"},
    ]
    async with serve(backend) as (client, _):
        completion = await client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
    assert completion.choices[0].message.content == "Sunny in Paris, 3am in Tokyo."
    assert completion.choices[0].finish_reason == "stop"
    assert backend.calls[0] == [
        Message("user", "Weather in Paris?"),
        Message(
            "assistant",
            "Let me look.",
            (
                TextPart("Let me look."),
                ToolCallPart("call_1", "get_weather", '{"city":"P"}'),
                ToolCallPart("call_2", "get_time", "{}"),
                ToolResultPart("call_2", "3am"),
                ToolResultPart("call_1", "sunny"),
            ),
        ),
        Message("user", "Thanks"),
    ]


SERVER_RAN: list[Event] = [
    ToolCallStart("srv_1", "lookup"),
    ToolCallArgsDelta("srv_1", '{"q": "x"}'),
    ToolCallResult("srv_1", "42"),
    TextDelta("It is 42."),
    FinishEvent("stop"),
]


async def test_calls_the_backend_ran_itself_are_not_the_clients_to_run() -> None:
    async with serve(ScriptedBackend(SERVER_RAN)) as (client, _):
        completion = await client.chat.completions.create(model="m", messages=ASK)
        stream = await client.chat.completions.create(model="m", messages=ASK, stream=True)
        chunks = [chunk async for chunk in stream]
    message = completion.choices[0].message
    assert (message.content, message.tool_calls, completion.choices[0].finish_reason) == ("It is 42.", None, "stop")
    assert all(not c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It is 42."
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_call_no_result_answered_is_sent_whole_before_the_finish() -> None:
    # Without the client's tools, a call is held until it is known whether the backend ran it.
    script: list[Event] = [
        *SERVER_RAN[:3],
        ToolCallStart("c_2", "ask_user"),
        ToolCallArgsDelta("c_2", "{}"),
        FinishEvent("tool_calls"),
    ]
    async with serve(ScriptedBackend(script)) as (client, _):
        stream = await client.chat.completions.create(model="m", messages=ASK, stream=True)
        chunks = [chunk async for chunk in stream]
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(calls) == 1
    [call] = calls[0]
    assert call.function is not None
    assert (call.index, call.id, call.function.name, call.function.arguments) == (0, "c_2", "ask_user", "{}")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


_CALL: Any = {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]}

BAD: list[tuple[dict[str, Any], str]] = [
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [_tool("f")], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [_tool("f")], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tools": [_tool("f")], "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": [_tool("f"), _tool("f")]}, "tools"),
    ({"tools": [_tool("no spaces")]}, "tools.0.function.name"),
    ({"tools": [{"type": "custom", "function": {"name": "f"}}]}, "tools.0.type"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"seed": "seven"}, "seed"),
    ({"messages": [*ASK, _CALL, {"role": "tool", "content": "x"}]}, "messages.2.tool_call_id"),
    ({"messages": [*ASK, _CALL, {"role": "tool", "tool_call_id": "c9", "content": "x"}]}, "messages.2.tool_call_id"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "messages.1.tool_call_id"),
    (
        {"messages": [*ASK, _CALL, *[{"role": "tool", "tool_call_id": "c1", "content": "x"}] * 2]},
        "messages.3.tool_call_id",
    ),
    ({"messages": [*ASK, {**_CALL, "tool_calls": _CALL["tool_calls"] * 2}]}, "messages.1.tool_calls.1.id"),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
async def test_a_bad_tool_field_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    backend = ToolScripted(CALLING)
    async with serve(backend) as (_, http):
        r = await http.post("/v1/chat/completions", json={"model": "m", "messages": ASK, **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(param)
    assert backend.calls == []


UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    ({"tools": [_tool("f")]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stop": "END"}, "stop"),
    ({"seed": 1}, "seed"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
]


@pytest.mark.parametrize(("fields", "param"), UNSUPPORTED)
async def test_a_field_the_backend_cannot_honour_is_a_400_never_dropped(fields: dict[str, Any], param: str) -> None:
    backend = ScriptedBackend([TextDelta("hi"), FinishEvent("stop")])  # declares no support for any of them
    async with serve(backend) as (client, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=ASK, extra_body=fields)
    body: Any = caught.value.body
    assert body["param"] == param
    assert body["code"] == "unsupported_parameter"
    assert "scripted backend" in body["message"]
    assert backend.calls == []


async def test_defaults_that_ask_for_nothing_are_accepted_by_any_backend() -> None:
    backend = ScriptedBackend([TextDelta("hi"), FinishEvent("stop")])
    async with serve(backend) as (client, _):
        completion = await client.chat.completions.create(
            model="m", messages=ASK, response_format={"type": "text"}, logprobs=False
        )
    assert completion.choices[0].message.content == "hi"
