"""The request pipeline: routers bound to their relay, refusals answered in each surface's shape wherever mounted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from tests.history.helpers import msg
from tokenrelay.backends import Pause, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.server import Relay, Settings, create_router
from tokenrelay.server.openai_routes import create_openai_router


def make_relay(text: str = "hi", **settings: object) -> Relay:
    backend = ScriptedBackend([TextDelta(text), FinishEvent("stop")])
    return Relay(backend, Settings(backend="synthetic", **settings), history=MemoryHistory())  # type: ignore[arg-type]


@asynccontextmanager
async def client_of(app: FastAPI, *relays: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with AsyncExitStack() as stack:
        for relay in relays:
            await stack.enter_async_context(relay.lifespan())
        transport = httpx.ASGITransport(app=app)
        yield await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://test"))


async def test_a_router_mounted_in_another_app_refuses_in_the_projects_shape() -> None:
    relay = make_relay()
    app = FastAPI()  # no tokenrelay exception handlers: the routes answer by themselves
    app.include_router(create_router(relay), prefix="/relay")
    async with client_of(app, relay) as client:
        r = await client.post("/relay/api/chat/stream", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_json"
        r = await client.post("/relay/api/chat/stream", json={"message": "hi", "user_id": 7})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "user_id")
        r = await client.get("/relay/api/runs/nope/stream")
        assert (r.status_code, r.json()) == (
            404,
            {"error": {"code": "run_not_found", "message": "run nope is unknown or expired"}},
        )
        r = await client.post("/relay/v1/chat/completions", content=b"[]", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"] == {
            "message": "body: must be a JSON object",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }


async def test_the_run_limit_is_a_503_with_retry_after_on_every_surface() -> None:
    relay = Relay(
        ScriptedBackend([TextDelta("a"), Pause(60)]),
        Settings(backend="synthetic", max_active_runs=1),
        history=MemoryHistory(),
    )
    app = FastAPI()
    app.include_router(create_router(relay))
    async with client_of(app, relay) as client:
        await relay.start_chat("busy", user_id="ann", conversation_id=None)
        r = await client.post("/api/chat/stream", json={"message": "hi"})
        assert (r.status_code, r.headers["retry-after"], r.json()["error"]["code"]) == (503, "1", "overloaded")
        chat = {"id": "c", "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
        r = await client.post("/api/chat", json=chat)
        assert (r.status_code, r.headers["retry-after"], r.json()["error"]["code"]) == (503, "1", "overloaded")
        completion = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        r = await client.post("/v1/chat/completions", json=completion)
        assert (r.status_code, r.headers["retry-after"]) == (503, "1")
        assert r.json()["error"]["type"] == "server_error"


async def test_each_router_serves_the_relay_it_was_created_for() -> None:
    first, second = make_relay("from the first"), make_relay("from the second")
    app = FastAPI()
    app.include_router(create_router(first), prefix="/one")
    app.include_router(create_openai_router(second), prefix="/two")
    async with client_of(app, first, second) as client:
        await first.history.add("ann", "c", msg("user", "question"))
        r = await client.get("/one/api/conversations", params={"user_id": "ann"})
        assert [c["id"] for c in r.json()["conversations"]] == ["c"]
        completion = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        r = await client.post("/two/v1/chat/completions", json=completion)
        assert r.json()["choices"][0]["message"]["content"] == "from the second"
        r = await client.post("/one/v1/chat/completions", json=completion)
        assert r.json()["choices"][0]["message"]["content"] == "from the first"
    assert await second.history.conversations("ann") == []
