"""The recorded streams are what the providers send: every event validates against the SDKs' own models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from tests.backends.replay import FIXTURES, _events
from tokenrelay.sse import ServerSentEvent, SSEDecoder


def sse_events(path: Path) -> list[ServerSentEvent]:
    return [e for e in SSEDecoder().feed(path.read_bytes()) if isinstance(e, ServerSentEvent)]


def validator(provider: str) -> Any:
    if provider in ("openai_chat", "agents"):
        from openai.types.chat import ChatCompletionChunk

        return ChatCompletionChunk.model_validate
    if provider == "openai_responses":
        from openai.types.responses import ResponseStreamEvent

        return TypeAdapter(ResponseStreamEvent).validate_python
    from anthropic.types import RawMessageStreamEvent

    return TypeAdapter(RawMessageStreamEvent).validate_python


STREAMS = sorted(FIXTURES.rglob("*.sse"))


@pytest.mark.parametrize("path", STREAMS, ids=[str(p.relative_to(FIXTURES)) for p in STREAMS])
def test_stream_fixture_events_validate_against_the_sdk(path: Path) -> None:
    provider = path.parent.name
    validate = validator(provider)
    events = sse_events(path)
    assert events
    for event in events:
        if event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        if provider in ("openai_chat", "agents") and "error" in data:  # an error object in a chat stream
            assert isinstance(data["error"]["message"], str)
            continue
        if provider in ("anthropic", "openai_responses"):
            assert event.event == data["type"], "the SSE event name repeats the data's type"
        if event.event in ("ping", "error") and provider == "anthropic":
            continue  # the SDK handles these before validation
        if event.event == "error" and provider == "openai_responses":
            assert {"code", "message"} <= data.keys()
            continue
        validate(data)


def test_each_event_is_sent_as_its_own_chunk() -> None:
    body = (FIXTURES / "anthropic/text.sse").read_bytes()
    chunks = _events(body)
    assert b"".join(chunks) == body
    assert len(chunks) == len(sse_events(FIXTURES / "anthropic/text.sse"))


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.json")), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_error_bodies_have_the_documented_shape(path: Path) -> None:
    body = json.loads(path.read_text())
    error = body["error"]
    assert isinstance(error["message"], str)
    assert isinstance(error["type"], str)
    if path.parent.name == "anthropic":
        assert body["type"] == "error"
    else:
        assert {"param", "code"} <= error.keys()
