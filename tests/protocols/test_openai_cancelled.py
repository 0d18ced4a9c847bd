"""A cancelled run in OpenAI's protocol: never ``finish_reason: "stop"``, an error with code ``cancelled`` instead."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import running_server
from tests.protocols.helpers import CTX, chunks, numbered
from tests.server.helpers import GatedBackend
from tokenrelay.events import ErrorEvent, Event, FinishEvent, TextDelta
from tokenrelay.protocols import OpenAIChatEncoder
from tokenrelay.protocols.openai_chat import CompletionBuilder, finish_reason
from tokenrelay.server import Relay, Settings, create_app

CANCELLED = {
    "error": {
        "message": "the run was cancelled before it finished",
        "type": "cancelled",
        "param": None,
        "code": "cancelled",
    }
}


def encoded(events: list[Event]) -> list[Any]:
    encoder = OpenAIChatEncoder(CTX, model="m", include_usage=True, created=1)
    return chunks(encoder.open() + encoder.encode(numbered(events)))


def test_a_cancelled_stream_ends_with_an_error_not_a_finish_reason() -> None:
    out = encoded([TextDelta("Hel"), FinishEvent("cancelled")])
    assert [c["choices"][0]["delta"] for c in out[:-1]] == [{"role": "assistant", "content": ""}, {"content": "Hel"}]
    assert all(c["choices"][0]["finish_reason"] is None for c in out[:-1])
    assert out[-1] == CANCELLED  # and no [DONE]: the stream ends as a failed one does


def test_a_run_ended_by_shutdown_keeps_its_own_error() -> None:
    out = encoded(
        [TextDelta("Hel"), ErrorEvent("shutdown", "the server is restarting", True), FinishEvent("cancelled")]
    )
    assert out[-1]["error"]["code"] == "shutdown"
    assert len([c for c in out if "error" in c]) == 1


def test_only_finished_runs_have_an_openai_finish_reason() -> None:
    assert [finish_reason(r) for r in ("stop", "length", "tool_calls", "content_filter")] == [
        "stop",
        "length",
        "tool_calls",
        "content_filter",
    ]
    assert finish_reason("cancelled") is None
    assert finish_reason("error") is None


def test_a_cancelled_run_is_no_completion() -> None:
    builder = CompletionBuilder(CTX, model="m", created=1)
    for event in [TextDelta("Hel"), FinishEvent("cancelled")]:
        builder.add(event)
    assert builder.error == ErrorEvent("cancelled", "the run was cancelled before it finished")


async def test_the_openai_client_sees_a_cancelled_run_as_an_api_error() -> None:
    backend = GatedBackend()
    relay = Relay(backend, Settings(backend="synthetic", on_disconnect="detach"))
    async with (
        running_server(create_app(relay=relay)) as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
        httpx.AsyncClient(base_url=url, timeout=30) as raw,
    ):
        messages: Any = [{"role": "user", "content": "Hi"}]
        async with client.chat.completions.with_streaming_response.create(
            model="m", messages=messages, stream=True
        ) as response:
            run_id = response.headers["x-run-id"]
            stream = await response.parse()
            text = ""
            reasons: list[str | None] = []
            with pytest.raises(openai.APIError) as raised:
                async for chunk in stream:
                    text += chunk.choices[0].delta.content or ""
                    reasons.append(chunk.choices[0].finish_reason)
                    if text == "one":  # a viewer elsewhere presses Stop
                        r = await raw.post(f"/api/runs/{run_id}/cancel")
                        assert r.json()["cancelled"] is True
        await asyncio.wait_for(backend.cancelled.wait(), 5)
    assert text == "one"
    assert reasons == [None, None]  # never "stop"
    assert raised.value.code == "cancelled"
    assert raised.value.body == CANCELLED["error"]
