"""Upstream errors, as the end user sees them and as the operator's log keeps them, from recorded wire bytes.

The user gets a code, a few words and whether trying again can help; the upstream's own body (here llama.cpp's
server, which answers a request that fails validation with a 500 carrying its source file and line) reaches the
log only, with the run's id. A refused request is not retryable, whatever the status it came with, and is not sent
again by the SDK's own retries; a failure of the service is retryable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.backends import providers
from tests.backends.conftest import run
from tests.backends.replay import ReplayServer
from tests.conftest import free_port
from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.events import ErrorEvent, FinishEvent

Make = Callable[..., Any]


def agents(replay: ReplayServer, **kwargs: object) -> AgentsBackend:
    options: dict[str, object] = {"model": "smollm2", "base_url": f"{replay.url}/v1", "max_retries": 0}
    return AgentsBackend(**(options | kwargs))  # type: ignore[arg-type]


SERVER_DETAILS = ["app.py", "line 376", "site-packages", "float_parsing"]  # error_500_validation.json


async def failed(
    replay: ReplayServer, make: Make, caplog: pytest.LogCaptureFixture, **kwargs: object
) -> tuple[ErrorEvent, list[str]]:
    with caplog.at_level(logging.WARNING, "tokenrelay.backends"):
        events = await run(make(replay, **kwargs))
    error, finish = events[-2:]
    assert isinstance(error, ErrorEvent)
    assert finish == FinishEvent("error")
    return error, [r.getMessage() for r in caplog.records if r.name == "tokenrelay.backends"]


@pytest.mark.parametrize("make", [providers.openai_chat, agents], ids=["openai", "agents"])
async def test_a_validation_failure_sent_as_a_500_is_final_and_its_body_is_logged_not_shown(
    replay: ReplayServer, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        replay.reply("openai_chat/error_500_validation.json", status=500)
    error, logged = await failed(replay, make, caplog, max_retries=2)
    assert (error.code, error.retryable) == ("bad_request", False)
    assert error.message == f"{make(replay).name}: HTTP 500, the request was rejected"
    assert len(replay.requests) == 1  # the SDK's retries did not send it again
    for detail in SERVER_DETAILS:
        assert detail not in error.message
    lines = [line for line in logged if "float_parsing" in line]
    assert len(lines) == 1
    assert lines[0].startswith("run ")
    assert "app.py" in lines[0]
    assert "line 376" in lines[0]


@pytest.mark.parametrize("make", [providers.openai_chat, agents], ids=["openai", "agents"])
async def test_a_server_error_is_retryable_and_retried_by_the_sdk(
    replay: ReplayServer, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        replay.reply("openai_chat/error_500.json", status=500)
    error, logged = await failed(replay, make, caplog, max_retries=1)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert len(replay.requests) == 2
    assert "Sorry about that" not in error.message
    assert any("Sorry about that" in line for line in logged)


@pytest.mark.parametrize(
    ("fixture", "status", "code", "retryable"),
    [
        ("openai_chat/error_404.json", 404, "not_found", False),
        ("openai_chat/error_401.json", 401, "auth_error", False),
        ("openai_chat/error_429.json", 429, "rate_limited", True),
        ("openai_chat/error_500.json", 503, "upstream_error", True),
    ],
)
async def test_agents_errors_say_what_happened_and_whether_to_try_again(
    replay: ReplayServer, caplog: pytest.LogCaptureFixture, fixture: str, status: int, code: str, retryable: bool
) -> None:
    replay.reply(fixture, status=status)
    error, logged = await failed(replay, agents, caplog)
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message.startswith(f"agents: HTTP {status}, ")
    assert "invalid_request_error" not in error.message
    assert "server_error" not in error.message
    assert any(f"HTTP {status}" in line for line in logged)


async def test_anthropic_invalid_request_is_final_and_its_words_are_logged(
    replay: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    replay.reply("anthropic/error_400.json", status=400)
    error, logged = await failed(replay, providers.anthropic, caplog, max_retries=2)
    assert (error.code, error.retryable) == ("bad_request", False)
    assert error.message == "anthropic: HTTP 400, the request was rejected"
    assert len(replay.requests) == 1
    assert any("toolu_01T1x1fJ34qAmk2tNTrN7Up6" in line and "req_011CSK7pQ2mN4vX8bT6yR3wZ" in line for line in logged)


async def test_a_connection_refused_hides_the_host_and_is_retryable(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    with caplog.at_level(logging.WARNING, "tokenrelay.backends"):
        events = await run(OpenAIChatBackend(model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0))
    error = events[-2]
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("connection_error", True)
    assert str(port) not in error.message
    assert "127.0.0.1" not in error.message
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records if r.name == "tokenrelay.backends")
