"""The official ``openai`` Python client against ``/v1/chat/completions`` and ``/v1/models`` on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from fastapi import HTTPException, Request

from tests.conftest import running_server, wait_for_async
from tests.server.helpers import GatedBackend, host_app
from tokenrelay.backends import ScriptedBackend, SyntheticBackend
from tokenrelay.backends.base import Backend, BackendError, Message
from tokenrelay.events import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.server.openai_routes import create_openai_router


@asynccontextmanager
async def serve(backend: Backend, **settings: Any) -> AsyncIterator[tuple[openai.AsyncOpenAI, Relay]]:
    relay = Relay(backend, Settings(backend="synthetic", **settings))
    async with running_server(create_app(relay=relay)) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
            yield client, relay


ANSWER = [ReasoningDelta("Hm."), TextDelta("Hello"), TextDelta(" there."), UsageEvent(5, 2), FinishEvent("stop")]


async def test_non_streaming_completion_is_stateless() -> None:
    backend = ScriptedBackend(ANSWER)
    async with serve(backend) as (client, relay):
        messages: Any = [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Again?"}]},
        ]
        completion = await client.chat.completions.create(model="any-name", messages=messages, user="alice")
        assert await relay.history.load("alice", "any") == []
    assert backend.calls == [
        [
            Message("system", "Be terse."),
            Message("user", "Hi"),
            Message("assistant", "Hello."),
            Message("user", "Again?"),
        ]
    ]
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "scripted"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there."
    assert choice.message.model_extra == {"reasoning_content": "Hm."}
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        5,
        2,
        7,
    )


async def test_streaming_chunks_with_usage() -> None:
    async with serve(ScriptedBackend(ANSWER)) as (client, _):
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there."
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 7


async def test_stream_helper_accumulates_text_and_tool_calls() -> None:
    backend = ScriptedBackend(
        [
            TextDelta("Checking."),
            ToolCallStart("call_1", "get_weather"),
            ToolCallArgsDelta("call_1", '{"city": '),
            ToolCallArgsDelta("call_1", '"Paris"}'),
            FinishEvent("tool_calls"),
        ]
    )
    async with serve(backend) as (client, _):
        async with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "Weather?"}]) as s:
            final = await s.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking."
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.id == "call_1"
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert final.choices[0].finish_reason == "tool_calls"


async def test_error_mid_stream_raises_api_error() -> None:
    backend = ScriptedBackend([TextDelta("Hal"), BackendError("model_error", "the model fell over")])
    async with serve(backend) as (client, _):
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        text = ""
        with pytest.raises(openai.APIError, match="the model fell over") as raised:
            async for chunk in stream:
                text += chunk.choices[0].delta.content or ""
    assert text == "Hal"
    assert raised.value.body == {
        "message": "the model fell over",
        "type": "server_error",
        "param": None,
        "code": "model_error",
    }


async def test_failed_run_without_streaming_is_an_http_error() -> None:
    async with serve(ScriptedBackend([ErrorEvent("rate_limited", "slow down", retryable=True)])) as (client, _):
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 503
    assert raised.value.code == "rate_limited"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "Hi"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": 3}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "user": "two words"}, "user"),
    ],
)
async def test_bad_requests_get_openais_error_shape(body: dict[str, Any], param: str) -> None:
    backend = ScriptedBackend([TextDelta("never")])
    async with serve(backend) as (client, _):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.post("/chat/completions", cast_to=object, body=body)
    assert raised.value.status_code == 400
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert backend.calls == []


async def test_too_long_message_and_malformed_json() -> None:
    async with serve(ScriptedBackend([TextDelta("never")]), max_message_bytes=8) as (client, _):
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "far too long"}])
        assert raised.value.status_code == 413
        assert raised.value.code == "message_too_long"
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as raw:
            r = await raw.post("chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


async def test_models_list_the_backends_model() -> None:
    async with serve(SyntheticBackend(tokens=1)) as (client, _):
        models = [m async for m in client.models.list()]
        assert [m.id for m in models] == ["synthetic"]
        assert (await client.models.retrieve("synthetic")).owned_by == "tokenrelay"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-17")


async def test_authentication_goes_through_resolve_user() -> None:
    async def bearer(request: Request, claimed: str | None) -> str:
        if request.headers.get("authorization") != "Bearer sesame":
            raise HTTPException(401, {"code": "invalid_token", "message": "the bearer token is not valid"})
        return "alice"

    backend = ScriptedBackend([TextDelta("ok")])
    relay = Relay(backend, Settings(backend="synthetic"))
    app = host_app(relay, create_openai_router(relay, resolve_user=bearer))
    async with running_server(app) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
            assert raised.value.code == "invalid_token"
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0) as client:
            completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "ok"
    assert backend.calls == [[Message("user", "Hi")]]


async def test_client_leaving_a_non_streaming_request_cancels_the_run() -> None:
    backend = GatedBackend()
    async with serve(backend) as (client, relay):
        request = asyncio.create_task(
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
        )
        await wait_for_async(lambda: relay.runs.active_runs == 1, timeout=2, what="the run to start")
        request.cancel()
        await asyncio.wait_for(backend.cancelled.wait(), 2)
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=2, what="active_runs to drop to 0")
