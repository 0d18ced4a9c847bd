"""End to end through real uvicorn on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import running_server, wait_for_async
from tests.server.helpers import BAD_STREAM_REQUESTS, answers, host_app, payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.backends.base import Backend, BackendError
from tokenrelay.events import FinishEvent, TextDelta, UsageEvent
from tokenrelay.server import Relay, Settings, create_app, create_router
from tokenrelay.sse import Comment, ServerSentEvent, SSEDecoder


@pytest.fixture
async def synthetic() -> AsyncIterator[tuple[str, Relay]]:
    relay = Relay(SyntheticBackend(tokens=6, interval_ms=1), Settings(backend="synthetic"))
    async with running_server(create_app(relay=relay)) as url:
        yield url, relay


@asynccontextmanager
async def serve_backend(backend: Backend, **settings: object) -> AsyncIterator[tuple[str, Relay]]:
    relay = Relay(backend, Settings(backend="synthetic", **settings))  # type: ignore[arg-type]
    async with running_server(create_app(relay=relay)) as url:
        yield url, relay


async def test_post_streams_the_seed_frames_with_ids_and_headers(synthetic: tuple[str, Relay]) -> None:
    url, _ = synthetic
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi", "user_id": "u1"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            assert "connection" not in r.headers  # HTTP/1.1 keeps it open; the server says "close" where it must
            run_id = r.headers["x-run-id"]
            events = await read_stream(r)
    data = payloads(events)
    assert "".join(str(d["delta"]) for d in data if "delta" in d) == "You said: hi. Tokens stream to "
    done = data[-1]
    assert done["done"] is True
    assert done["finish_reason"] == "stop"
    assert done["run_id"] == run_id
    assert done["usage"] == {"input_tokens": 1, "output_tokens": 6}
    ids = [int(e.id) for e in events if isinstance(e, ServerSentEvent)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert len(run_id) >= 22  # 128 random bits, base64url


async def test_get_streams_the_same_for_eventsource(synthetic: tuple[str, Relay]) -> None:
    url, _ = synthetic
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        params = {"message": "hi", "user_id": "u1"}
        async with client.stream(
            "GET", "/api/chat/stream", params=params, headers={"accept": "text/event-stream"}
        ) as r:
            assert r.status_code == 200
            data = payloads(await read_stream(r))
    assert "".join(str(d.get("delta", "")) for d in data) == "You said: hi. Tokens stream to "
    assert data[-1]["done"] is True


async def test_eventsource_reconnect_never_starts_the_message_again(synthetic: tuple[str, Relay]) -> None:
    url, relay = synthetic
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.get("/api/chat/stream", params={"message": "hi"}, headers={"last-event-id": "3"})
    assert r.status_code == 204
    assert relay.backend.stats.started == 0  # type: ignore[attr-defined]


async def test_heartbeat_comments_while_the_backend_is_silent() -> None:
    backend = ScriptedBackend([Pause(0.4), TextDelta("late"), FinishEvent("stop")])
    async with (
        serve_backend(backend, heartbeat_s=0.1) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            events = await read_stream(r, comments=True)
    first_data = next(i for i, e in enumerate(events) if isinstance(e, ServerSentEvent))
    assert Comment("ping") in events[:first_data]
    assert payloads(events)[0] == {"delta": "late"}


async def test_client_disconnect_mid_stream_cancels_the_run() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60), TextDelta("never")])
    async with serve_backend(backend, on_disconnect="cancel") as (url, relay):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                decoder = SSEDecoder()
                async for chunk in r.aiter_raw():
                    if decoder.feed(chunk):
                        break  # got the first delta: now hang up
        await asyncio.wait_for(backend.cancelled.wait(), 2)
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=2, what="active_runs to drop to 0")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            health = (await client.get("/api/health")).json()
        assert health["active_runs"] == 0
        assert health["backend_info"]["streams_cancelled"] == 1


async def test_error_mid_stream_gives_the_error_frame_then_done() -> None:
    backend = ScriptedBackend([TextDelta("partial"), BackendError("upstream_unavailable", "the model went away")])
    async with serve_backend(backend) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            data = payloads(await read_stream(r))
    assert data[0] == {"delta": "partial"}
    assert data[1] == {"error": {"code": "upstream_unavailable", "message": "the model went away", "retryable": False}}
    assert data[2]["done"] is True
    assert data[2]["finish_reason"] == "error"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"message": ""}, 422, "message"),
        ({"message": " \n\t "}, 422, "message"),
        ({"message": "x" * (32 * 1024 + 1)}, 413, "message"),
        ({"message": 5}, 422, "message"),
        ({"message": "hi", "user_id": 7}, 422, "user_id"),
        ({"message": "hi", "conversation_id": "bad id!"}, 422, "conversation_id"),
        ({}, 422, "message"),
        (["message"], 422, "body"),
    ],
)
async def test_bad_input_gets_a_4xx_naming_the_field(
    synthetic: tuple[str, Relay], body: object, status: int, field: str
) -> None:
    url, relay = synthetic
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/api/chat/stream", json=body)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["field"] == field
    assert relay.backend.stats.started == 0  # type: ignore[attr-defined]


async def test_malformed_json_and_bad_query(synthetic: tuple[str, Relay]) -> None:
    url, _ = synthetic
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post(
            "/api/chat/stream", content=b'{"message": "hi"', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_json"
        r = await client.get("/api/chat/stream")
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "message"


async def test_message_limit_is_configurable_in_utf8_bytes() -> None:
    async with serve_backend(SyntheticBackend(tokens=1, interval_ms=0), max_message_bytes=4) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.post("/api/chat/stream", json={"message": "ééé"})).status_code == 413
            assert (await client.post("/api/chat/stream", json={"message": "éé"})).status_code == 200


async def test_follow_up_carries_the_earlier_turns() -> None:
    backend = ScriptedBackend([TextDelta("answer one"), FinishEvent("stop")])
    async with serve_backend(backend) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"message": "first", "user_id": "alice", "conversation_id": "conv-1"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            assert payloads(await read_stream(r))[-1]["conversation_id"] == "conv-1"
        body["message"] = "second"
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            await read_stream(r)
        # Another user with the same conversation id shares nothing.
        async with client.stream("POST", "/api/chat/stream", json={**body, "user_id": "bob"}) as r:
            await read_stream(r)
    assert [(m.role, m.content) for m in backend.calls[1]] == [
        ("user", "first"),
        ("assistant", "answer one"),
        ("user", "second"),
    ]
    assert [(m.role, m.content) for m in backend.calls[2]] == [("user", "second")]


async def test_health(synthetic: tuple[str, Relay]) -> None:
    url, _ = synthetic
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        health = (await client.get("/api/health")).json()
    assert health["status"] == "ok"
    assert health["backend"] == "synthetic"
    assert health["active_runs"] == 0


async def test_the_router_mounts_into_a_users_own_app() -> None:
    relay = Relay(SyntheticBackend(tokens=3, interval_ms=0), Settings(backend="synthetic"))
    app = host_app(relay, create_router(relay), prefix="/relay")

    @app.get("/mine")
    async def mine() -> dict[str, str]:
        return {"ok": "yes"}

    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/mine")).json() == {"ok": "yes"}
        async with client.stream("POST", "/relay/api/chat/stream", json={"message": "x"}) as r:
            data = payloads(await read_stream(r))
    assert data[-1]["done"] is True


class _Endpoints:
    """A pure ASGI middleware that keeps what served each request: the route's endpoint, and whether FastAPI's
    request machinery ran (it puts its exit stacks in the scope)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, object, bool]] = []
        _Endpoints.last = self

    last: _Endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.seen.append((scope["path"], scope.get("endpoint"), "fastapi_inner_astack" in scope))


async def test_the_apps_streams_skip_fastapis_machinery_and_keep_its_answers() -> None:
    # create_app serves the seed streams as plain ASGI (nothing of FastAPI's request machinery held for a stream's
    # length); the document still describes them, and their refusals are the FastAPI routes' own.
    relay = Relay(SyntheticBackend(tokens=3, interval_ms=0), Settings(backend="synthetic"))
    app = create_app(relay=relay)
    app.add_middleware(_Endpoints)
    assert {"get", "post"} <= app.openapi()["paths"]["/api/chat/stream"].keys()
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            run_id = r.headers["x-run-id"]
            assert payloads(await read_stream(r))[-1]["done"] is True
        async with client.stream("GET", "/api/chat/stream", params={"message": "hi", "protocol": "openai"}) as r:
            body = (await r.aread()).decode()
        resumed = await client.get(f"/api/runs/{run_id}/stream", headers={"last-event-id": "1"})
        blank = await client.get("/api/chat/stream", params={"message": "  "})
        unknown = await client.get("/api/runs/nope/stream")
        bad_user = await client.post("/api/chat/stream", json={"message": "x", "user_id": "a b"})
        not_json = await client.post("/api/chat/stream", content=b"x", headers={"content-type": "text/plain"})
        reconnect = await client.get("/api/chat/stream", headers={"last-event-id": "3"})
        chat = {"id": "chat-1", "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
        use_chat = await client.post("/api/chat", json=chat)  # the AI SDK's useChat, and its resume
        no_chat = await client.get("/api/chat/nothing-running/stream")
        bad_chat = await client.post("/api/chat", json={"id": "chat-2", "messages": []})
        assert (await client.get("/api/health")).status_code == 200
    assert body.rstrip().endswith("data: [DONE]")
    assert resumed.status_code == 200
    assert payloads(list(SSEDecoder().feed(resumed.content)))[-1]["done"] is True
    assert (blank.status_code, blank.json()["error"]["field"]) == (422, "message")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "run_not_found")
    assert (bad_user.status_code, bad_user.json()["error"]["field"]) == (422, "user_id")
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert reconnect.status_code == 204
    assert use_chat.status_code == 200
    assert use_chat.text.rstrip().endswith("data: [DONE]")
    assert no_chat.status_code == 204
    assert (bad_chat.status_code, bad_chat.json()["error"]["code"]) == (422, "invalid_request")
    seen = _Endpoints.last.seen
    streams = [(e, fastapi) for path, e, fastapi in seen if path.endswith("/stream") or path == "/api/chat"]
    assert len(streams) == 11
    assert all(type(endpoint).__name__ == "_StreamEndpoint" and not fastapi for endpoint, fastapi in streams)
    assert [fastapi for path, _, fastapi in seen if path == "/api/health"] == [True]  # the others: FastAPI's


async def test_a_mounted_router_keeps_fastapis_routes_so_its_dependencies_apply() -> None:
    relay = Relay(SyntheticBackend(tokens=3, interval_ms=0), Settings(backend="synthetic"))
    calls: list[str] = []

    async def guard(request: Request) -> None:
        calls.append(request.url.path)

    app = host_app(relay, create_router(relay), prefix="/relay", dependencies=[Depends(guard)])
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("GET", "/relay/api/chat/stream", params={"message": "x"}) as r:
            assert payloads(await read_stream(r))[-1]["done"] is True
    assert calls == ["/relay/api/chat/stream"]


async def test_resume_after_an_event_id_and_cancel_endpoint() -> None:
    backend = ScriptedBackend([TextDelta("a"), TextDelta("b"), TextDelta("c"), UsageEvent(1, 3), FinishEvent("stop")])
    async with serve_backend(backend) as (url, relay):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]
                await read_stream(r)
            async with client.stream("GET", f"/api/runs/{run_id}/stream", headers={"last-event-id": "1"}) as r:
                data = payloads(await read_stream(r))
            assert "".join(str(d.get("delta", "")) for d in data) == "bc"
            assert (await client.get(f"/api/runs/{run_id}/stream", params={"last_event_id": "5"})).status_code == 204
            assert (await client.get("/api/runs/nope/stream")).status_code == 404
            assert (await client.get(f"/api/runs/{run_id}/stream", params={"user_id": "mallory"})).status_code == 404
            r = await client.post(f"/api/runs/{run_id}/cancel")
            assert r.json() == {"run_id": run_id, "cancelled": False}
        assert relay.runs.active_runs == 0


async def test_cancel_endpoint_stops_a_running_run() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with serve_backend(backend, on_disconnect="detach") as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]
                cancel = asyncio.create_task(client.post(f"/api/runs/{run_id}/cancel"))
                data = payloads(await read_stream(r))
            assert (await asyncio.wait_for(cancel, 5)).json()["cancelled"] is True
        assert data[-1]["finish_reason"] == "cancelled"
        assert backend.cancelled.is_set()


async def test_no_traceback_logged_for_an_ordinary_disconnect(caplog: pytest.LogCaptureFixture) -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with serve_backend(backend, on_disconnect="cancel") as (url, relay):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                async for _ in r.aiter_raw():
                    break
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=2, what="the run to end")
    assert not [rec for rec in caplog.records if rec.exc_info], [rec.getMessage() for rec in caplog.records]


async def test_retry_after_from_the_backend_reaches_the_error_frame() -> None:
    backend = ScriptedBackend([BackendError("rate_limited", "slow down", retryable=True, retry_after=2.5)])
    async with serve_backend(backend) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
            data = payloads(await read_stream(r))
    assert data[0] == {"error": {"code": "rate_limited", "message": "slow down", "retryable": True, "retry_after": 2.5}}
    assert data[1]["finish_reason"] == "error"


async def test_regenerate_asks_again_instead_of_asking_twice() -> None:
    backend = ScriptedBackend([TextDelta("an answer"), FinishEvent("stop")])
    async with serve_backend(backend) as (url, relay), httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"message": "question", "user_id": "alice", "conversation_id": "conv-r"}
        for extra in ({}, {"regenerate": True}, {"regenerate": True}):
            async with client.stream("POST", "/api/chat/stream", json={**body, **extra}) as r:
                await read_stream(r)
        body["message"] = "follow-up"
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            await read_stream(r)
        stored = await relay.history.load("alice", "conv-r")
    # The model never sees the question twice, nor an answer that was replaced.
    assert [(m.role, m.content) for m in backend.calls[1]] == [("user", "question")]
    assert [(m.role, m.content) for m in backend.calls[2]] == [("user", "question")]
    assert [(m.role, m.content) for m in backend.calls[3]] == [
        ("user", "question"),
        ("assistant", "an answer"),
        ("user", "follow-up"),
    ]
    # The history is a log: one question, three answers, then the follow-up.
    assert [m.role for m in stored] == ["user", "assistant", "assistant", "assistant", "user", "assistant"]


async def test_regenerate_of_a_question_the_server_never_saw_keeps_the_earlier_answer() -> None:
    backend = ScriptedBackend([TextDelta("first answer"), FinishEvent("stop")])
    async with serve_backend(backend) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"message": "one", "user_id": "alice", "conversation_id": "conv-n"}
        async with client.stream("POST", "/api/chat/stream", json=body) as r:
            await read_stream(r)
        # A retry of "two" whose first attempt failed before reaching the server.
        async with client.stream("POST", "/api/chat/stream", json={**body, "message": "two", "regenerate": True}) as r:
            await read_stream(r)
    assert [(m.role, m.content) for m in backend.calls[1]] == [
        ("user", "one"),
        ("assistant", "first answer"),
        ("user", "two"),
    ]


def _app(*, plain_streams: bool) -> tuple[FastAPI, ScriptedBackend]:
    backend = ScriptedBackend([TextDelta("x"), FinishEvent("stop")])  # counts the runs it is asked for
    relay = Relay(backend, Settings(backend="synthetic"))
    return host_app(relay, create_router(relay, plain_streams=plain_streams)), backend


async def test_the_plain_stream_routes_refuse_exactly_as_the_fastapi_routes_do() -> None:
    (mounted, mounted_backend), (plain, plain_backend) = _app(plain_streams=False), _app(plain_streams=True)
    answered: dict[str, list[tuple[int, Any, str | None]]] = {}
    for name, app in (("fastapi", mounted), ("plain", plain)):
        got = await answers(app, BAD_STREAM_REQUESTS)
        # (A HEAD's Allow names the route it reached: FastAPI's first partial match, here the GET route.)
        heads = [method == "HEAD" for method, _, _ in BAD_STREAM_REQUESTS]
        answered[name] = [(s, b, None if head else a) for (s, b, a), head in zip(got, heads, strict=True)]
    assert all(status >= 204 for status, _, _ in answered["plain"]), answered["plain"]
    assert answered["plain"] == answered["fastapi"]
    assert plain_backend.calls == mounted_backend.calls == []  # not one of them started a run
