"""What every wire protocol's encoder promises, checked on each of them: the Encoder contract."""

from __future__ import annotations

import types
from typing import get_args

import pytest

from tests.protocols.helpers import AGENT_RUN, CTX, frames, numbered
from tokenrelay import sse
from tokenrelay.events import (
    ErrorEvent,
    Event,
    FinishEvent,
    MetadataEvent,
    ReasoningDelta,
    RunPaused,
    StoredEvent,
    TextDelta,
    ToolApprovalRequest,
    ToolApprovalResponse,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)
from tokenrelay.protocols import AISDKProtocol, Encoder, OpenAIChatProtocol, SeedProtocol, WireProtocol

PROTOCOLS: list[WireProtocol] = [SeedProtocol(), AISDKProtocol(), OpenAIChatProtocol("m")]

# One event of every type, in an order a run could have them.
ONE_OF_EACH: list[Event] = [
    MetadataEvent({"k": "v"}),
    ReasoningDelta("r"),
    TextDelta("t"),
    ToolCallStart("c", "tool"),
    ToolCallArgsDelta("c", "{}"),
    ToolCallResult("c", "out"),
    ToolApprovalRequest("c2", "tool", "{}"),
    RunPaused(1.0),
    ToolApprovalResponse("c2", approved=True),
    UsageEvent(1, 2),
    ErrorEvent("model_error", "broke", retryable=True, retry_after=1.5),
    FinishEvent("error"),
]


def encoder(protocol: WireProtocol) -> Encoder:
    return protocol.encoder(CTX)


def test_the_samples_cover_the_whole_event_union() -> None:
    # A new event type must be added here too, so that every encoder below is run on it.
    union = Event
    assert isinstance(union, types.UnionType)
    assert {type(e) for e in ONE_OF_EACH} == set(get_args(union))


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_heartbeat_is_the_sse_ping_comment(protocol: WireProtocol) -> None:
    assert encoder(protocol).heartbeat() == sse.PING == b": ping\n\n"


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_retry_hint_is_refused_only_by_openai(protocol: WireProtocol) -> None:
    assert encoder(protocol).sse_retry is (protocol.name != "openai")


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.type)
def test_every_event_type_encodes_to_whole_frames(protocol: WireProtocol, event: Event) -> None:
    out = encoder(protocol)
    out.open()
    data = out.encode([StoredEvent(5, event)])
    assert data == b"" or data.endswith(b"\n\n")
    ids = {f.id for f in frames(data)}
    assert ids <= ({"", "5"} if protocol.name != "openai" else {""})


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
@pytest.mark.parametrize("after", [1, 6, len(AGENT_RUN) - 1])
def test_every_encoder_can_be_primed_and_then_writes_no_opening(protocol: WireProtocol, after: int) -> None:
    # prime() is part of the Encoder contract: a resuming client already has events 1..after and the opening.
    stored = numbered(AGENT_RUN)
    primed = encoder(protocol)
    primed.prime(stored[:after])
    assert primed.open() == b""
    rest = primed.encode(stored[after:])
    assert rest.endswith(b"\n\n")
    if protocol.name != "openai":
        assert frames(rest)[-1].id == str(len(AGENT_RUN))


@pytest.mark.parametrize("protocol", [AISDKProtocol(), OpenAIChatProtocol("m")], ids=lambda p: p.name)
def test_stateful_encoders_write_nothing_after_the_end(protocol: WireProtocol) -> None:
    out = encoder(protocol)
    out.open()
    assert out.encode(numbered([TextDelta("a"), FinishEvent("stop")]))
    assert out.encode(numbered([TextDelta("late")], start=3)) == b""
