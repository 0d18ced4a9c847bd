"""A request no route matches is answered in the error shape of the surface it was meant for."""

from __future__ import annotations

import httpx

from tokenrelay.backends.scripted import ScriptedBackend
from tokenrelay.events import TextDelta
from tokenrelay.server import Relay, Settings, create_app


def client() -> httpx.AsyncClient:
    relay = Relay(ScriptedBackend([TextDelta("ok")]), Settings(backend="synthetic", history="memory"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(relay=relay)), base_url="http://t")


async def test_an_unmatchable_model_name_is_an_openai_404() -> None:
    async with client() as c:
        # A newline cannot match the path parameter: the router's own 404, which must still be OpenAI's shape.
        r = await c.get("/v1/models/a%0Ab")
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found_error"
        assert r.json()["error"]["code"] == "not_found"
        assert (await c.get("/v1/nothing-here")).json()["error"]["type"] == "not_found_error"


async def test_an_unknown_api_path_or_method_is_the_projects_error_shape() -> None:
    async with client() as c:
        r = await c.get("/api/nothing-here")
        assert r.status_code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "Not Found"}}
        wrong = await c.delete("/api/chat/stream")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        assert "allow" in wrong.headers


async def test_other_paths_keep_the_default_answer() -> None:
    async with client() as c:
        r = await c.get("/favicon-nothing")
        assert r.status_code == 404
        assert r.json() == {"detail": "Not Found"}
