"""Bearer-token authentication: who a request acts as, and that nobody sees anyone else's runs or conversations."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from tests.conftest import running_server
from tests.server.helpers import payloads, read_stream
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.backends.base import Backend
from tokenrelay.client import AsyncClient, TokenrelayHTTPError
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings, create_app, create_router
from tokenrelay.server.auth import AuthError, load_tokens

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
ALICE = {"authorization": "Bearer tok-alice"}
BOB = {"authorization": "Bearer tok-bob"}


@asynccontextmanager
async def serve(backend: Backend | None = None, **settings: object) -> AsyncIterator[tuple[str, Relay]]:
    backend = backend or ScriptedBackend([TextDelta("hello"), Pause(0.2), TextDelta("!"), FinishEvent()])
    relay = Relay(backend, Settings(backend="synthetic", auth_tokens=TOKENS, **settings))  # type: ignore[arg-type]
    async with running_server(create_app(relay=relay)) as url:
        yield url, relay


async def test_requests_without_a_valid_token_get_401_with_a_bearer_challenge() -> None:
    async with serve() as (url, relay), httpx.AsyncClient(base_url=url, timeout=30) as client:
        requests = [
            ("POST", "/api/chat/stream", {"json": {"message": "hi"}}),
            ("GET", "/api/chat/stream", {"params": {"message": "hi"}}),
            ("GET", "/api/runs/x/stream", {}),
            ("POST", "/api/runs/x/cancel", {}),
            ("GET", "/api/conversations", {}),
            ("GET", "/api/conversations/c/messages", {}),
            ("DELETE", "/api/conversations/c", {}),
            (
                "POST",
                "/api/chat",
                {
                    "json": {
                        "id": "c",
                        "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
                    }
                },
            ),
            ("POST", "/v1/chat/completions", {"json": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}),
        ]
        for method, path, kw in requests:
            r = await client.request(method, path, **kw)  # type: ignore[arg-type]
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer"), path
            assert r.json()["error"]["code"] == "unauthorized", path
        r = await client.post("/api/chat/stream", json={"message": "hi"}, headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_token"
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        r = await client.post("/api/chat/stream", json={"message": "hi"}, headers={"authorization": "Basic eDp5"})
        assert r.status_code == 401
        assert (await client.get("/api/health")).status_code == 200  # for load balancers
    assert relay.backend.stats.started == 0  # type: ignore[attr-defined]


async def test_the_token_decides_the_user_and_a_claimed_user_id_is_ignored() -> None:
    async with serve() as (url, relay), httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"message": "hi", "user_id": "bob", "conversation_id": "c1"}
        async with client.stream("POST", "/api/chat/stream", json=body, headers=ALICE) as r:
            run_id = r.headers["x-run-id"]
            await read_stream(r)
        info = await relay.store.get(run_id)
        assert info is not None
        assert info.user_id == "alice"
        mine = await client.get("/api/conversations", headers=ALICE, params={"user_id": "bob"})
        assert [c["id"] for c in mine.json()["conversations"]] == ["c1"]
        assert (await client.get("/api/conversations", headers=BOB)).json() == {"conversations": []}


async def test_another_users_runs_and_conversations_are_404_everywhere() -> None:
    backend = ScriptedBackend([TextDelta("a"), Pause(60)])
    async with (
        serve(backend, on_disconnect="detach") as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        body = {"message": "hi", "conversation_id": "c1"}
        async with client.stream("POST", "/api/chat/stream", json=body, headers=ALICE) as r:
            run_id = r.headers["x-run-id"]
        for method, path, kw in [
            ("GET", f"/api/runs/{run_id}/stream", {}),
            ("GET", f"/api/runs/{run_id}/stream", {"params": {"user_id": "alice"}}),
            ("GET", "/api/chat/stream", {"params": {"run_id": run_id}, "headers": {"last-event-id": "0"}}),
            ("POST", f"/api/runs/{run_id}/cancel", {"params": {"user_id": "alice"}}),
            ("GET", "/api/conversations/c1/messages", {}),
            ("DELETE", "/api/conversations/c1", {}),
        ]:
            headers = {**BOB, **kw.pop("headers", {})}  # type: ignore[dict-item]
            r = await client.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]
            assert r.status_code == 404, (method, path)
        assert (await client.get("/api/chat/c1/stream", headers=BOB)).status_code == 204  # useChat: no run here
        # Alice can.
        async with client.stream("GET", f"/api/runs/{run_id}/stream", headers=ALICE) as r:
            assert r.status_code == 200
        r = await client.post(f"/api/runs/{run_id}/cancel", headers=ALICE)
        assert r.json()["cancelled"] is True


async def test_eventsource_can_pass_the_token_in_the_query_of_get_streams_only() -> None:
    async with serve() as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        params = {"message": "hi", "access_token": "tok-alice"}
        async with client.stream("GET", "/api/chat/stream", params=params) as r:
            assert r.status_code == 200
            run_id = r.headers["x-run-id"]
            assert payloads(await read_stream(r))[-1]["done"] is True
        r = await client.get(f"/api/runs/{run_id}/stream", params={"access_token": "tok-alice", "last_event_id": "1"})
        assert r.status_code == 200
        r = await client.post("/api/chat/stream", params={"access_token": "tok-alice"}, json={"message": "hi"})
        assert r.status_code == 401  # a POST has headers: no token in URLs there


async def test_the_python_client_sends_its_token() -> None:
    async with serve() as (url, _):
        async with AsyncClient(url, token="tok-alice") as client:
            result = await client.chat("hi", user_id="mallory")
            assert result.text == "hello!"
        async with AsyncClient(url) as client:
            with pytest.raises(TokenrelayHTTPError) as info:
                await client.chat("hi")
    assert info.value.status_code == 401
    assert info.value.code == "unauthorized"


async def test_a_resolver_of_your_own_replaces_the_tokens() -> None:
    async def from_gateway(request: Request, claimed: str | None) -> str:
        user = request.headers.get("x-gateway-user")
        if user is None:
            raise AuthError("no gateway user")
        return user

    relay = Relay(ScriptedBackend([TextDelta("x"), FinishEvent()]), Settings(backend="synthetic"))
    app = FastAPI()
    app.include_router(create_router(relay, resolve_user=from_gateway))
    async with running_server(app, lifespan="off") as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await relay.history.start()
        r = await client.get("/api/conversations")
        assert r.status_code == 401  # FastAPI's own handler: the status and challenge, its {"detail"} body
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.get("/api/conversations", headers={"x-gateway-user": "zoe"})
        assert r.json() == {"conversations": []}
        await relay.history.close()


def test_tokens_come_from_the_environment_flags_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENRELAY_AUTH_TOKENS", json.dumps({"t1": "ann"}))
    settings = Settings()
    assert settings.auth_tokens == {"t1": "ann"}
    assert "t1" not in repr(settings)
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"t2": "ben"}))
    assert load_tokens(settings.auth_tokens, path) == {"t1": "ann", "t2": "ben"}
    path.write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        load_tokens({}, path)
    with pytest.raises(ValueError, match="empty"):
        load_tokens({"": "x"}, None)

    from tokenrelay.cli import _add_settings_flags

    parser = argparse.ArgumentParser()
    _add_settings_flags(parser)
    args = parser.parse_args(["--auth-tokens", '{"t3": "cy"}', "--store", "redis", "--on-disconnect", "detach"])
    assert (args.auth_tokens, args.store, args.on_disconnect) == ({"t3": "cy"}, "redis", "detach")
    with pytest.raises(SystemExit):
        parser.parse_args(["--auth-tokens", "not json"])


def test_the_chat_command_sends_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from tests.test_cli import start_server

    monkeypatch.setenv("TOKENRELAY_AUTH_TOKENS", json.dumps(TOKENS))
    proc, url = start_server("--synthetic-text", "Hello, alice.")
    try:
        command = [sys.executable, "-m", "tokenrelay", "chat", "--url", url, "hi"]
        ok = subprocess.run([*command, "--token", "tok-alice"], capture_output=True, text=True, timeout=30)
        refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    finally:
        proc.terminate()
        proc.wait(10)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "Hello, alice.\n"
    assert refused.returncode == 1
    assert "401" in refused.stderr
