"""The app's streams served ahead of its middleware stack (server.front): only while the stack is FastAPI's own,
and answering every request exactly as through the stack. Real uvicorn on a port, real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace

from tests.conftest import running_server
from tests.server.helpers import BAD_STREAM_REQUESTS, answers, payloads, read_stream
from tokenrelay.backends import ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings, create_app
from tokenrelay.server.front import RelayApp


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process with no OpenTelemetry provider set up (another test of this process may have set one: FastAPI's own
    request telemetry is then on, and the streams rightly go through the stack)."""
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    monkeypatch.setattr(metrics, "get_meter_provider", metrics._internal._ProxyMeterProvider)


def _relay(**settings: Any) -> tuple[Relay, ScriptedBackend]:
    backend = ScriptedBackend([TextDelta("x"), FinishEvent("stop")])  # counts the runs it is asked for
    return Relay(backend, Settings(backend="synthetic", history="memory", **settings)), backend


class Marked:
    """A user's pure ASGI middleware: marks every response it passes on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def marked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-marked", b"1")]
            await send(message)

        await self.app(scope, receive, marked if scope["type"] == "http" else send)


# With CORS origins configured, a foreign origin's POST is refused too.
BAD = [
    *BAD_STREAM_REQUESTS,
    ("POST", "/api/chat/stream", {"json": {"message": "x"}, "headers": {"origin": "https://evil.example"}}),
]


async def test_the_front_answers_every_bad_request_as_the_stack_does() -> None:
    (front_relay, front_backend), (stack_relay, stack_backend) = (
        _relay(cors_origins=["https://app.example"]) for _ in range(2)
    )
    front, stack = create_app(relay=front_relay), create_app(relay=stack_relay)
    stack.add_middleware(Marked)  # a middleware of the user's: every request goes through the stack
    assert isinstance(front, RelayApp)
    assert not front._bare_stack()  # CORS origins: the app's own CORS middleware is in the stack
    front.user_middleware.clear()  # (so that this one is served ahead of it; the refusals do not depend on CORS)
    assert front._bare_stack()
    assert not stack._bare_stack()
    answered = await answers(front, BAD), await answers(stack, BAD)
    assert all(status >= 400 for status, _, _ in answered[0]), answered[0]
    assert answered[0] == answered[1]
    assert front_backend.calls == stack_backend.calls == []  # not one of them started a run


async def test_streams_skip_the_stack_while_it_is_fastapis_own_and_go_through_a_users_middleware() -> None:
    relay, backend = _relay(auth_tokens={"t1": "alice"})
    app = create_app(relay=relay)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        through: list[str] = []  # the paths that go through the stack (built by now, for the lifespan)
        stack = app.middleware_stack
        assert stack is not None

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            through.append(scope["path"])
            await stack(scope, receive, send)

        app.middleware_stack = counted
        async with client.stream("GET", "/api/chat/stream", params={"message": "hi", "access_token": "t1"}) as r:
            assert r.status_code == 200
            assert payloads(await read_stream(r))[-1]["done"] is True
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        auth = {"authorization": "Bearer t1"}
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r:
            assert r.status_code == 200
            assert (await r.aread()).endswith(b"data: [DONE]\n\n")
        body = {"threadId": "t1", "runId": "r1", "messages": [{"id": "m1", "role": "user", "content": "hi"}]}
        async with client.stream("POST", "/api/ag-ui", json=body, headers=auth) as r:
            assert r.status_code == 200
            assert b"RUN_FINISHED" in await r.aread()
        refused = await client.get("/api/chat/stream", params={"message": "hi"})  # the app's AuthError handler
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert through == []  # all went ahead of it
        assert (await client.get("/api/health")).status_code == 200
        assert through == ["/api/health"]  # any other route goes through it
    assert len(backend.calls) == 3

    relay, backend = _relay()
    app = create_app(relay=relay)
    app.add_middleware(Marked)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        for method, path in (("GET", "/api/chat/stream?message=hi"), ("POST", "/api/chat")):
            body = {"id": "c1", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
            async with client.stream(method, path, json=body if method == "POST" else None) as r:
                assert r.status_code == 200
                assert r.headers["x-marked"] == "1"  # the user's middleware saw the stream
                await r.aread()
    assert len(backend.calls) == 2


async def test_with_opentelemetry_set_up_the_streams_go_through_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    relay, _ = _relay()
    app = create_app(relay=relay)
    assert app._bare_stack()
    configured = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: configured)  # FastAPI's request spans are on
    assert not app._bare_stack()
