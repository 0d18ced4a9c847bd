"""A dependency down: a redis-server of the test's own (never the shared one), killed and started again."""

from __future__ import annotations

import time

import httpx

from tests.own_redis import RedisProcess
from tests.server.helpers import serving
from tokenrelay.backends import SyntheticBackend
from tokenrelay.server import Relay, Settings


async def test_redis_down_refuses_new_runs_with_a_json_503_and_health_recovers(own_redis: RedisProcess) -> None:
    settings = Settings(backend="synthetic", store="redis", redis_url=f"redis://127.0.0.1:{own_redis.port}/0")
    relay = Relay(SyntheticBackend(tokens=3, interval_ms=1), settings)
    async with serving(relay) as (host, port), httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as c:
        assert (await c.get("/api/health")).json()["dependencies"] == {"store": "ok", "history": "ok"}
        own_redis.kill()
        health = await c.get("/api/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert health.json()["dependencies"]["history"] == "ok"
        assert health.json()["dependencies"]["store"] != "ok"
        body = {"message": "while Redis is down", "user_id": "alice", "conversation_id": "down"}
        for path, payload in (
            ("/api/chat/stream", body),
            (
                "/api/chat",
                {
                    "id": "down2",
                    "user_id": "alice",
                    "messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}],
                },
            ),
        ):
            r = await c.post(path, json=payload)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"].isdigit()
            assert r.json()["error"]["code"] == "unavailable"
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert (r.status_code, r.json()["error"]["code"]) == (503, "unavailable")
        # Nothing half-written: no question waits in the history for an answer that will never come.
        assert await relay.history.load("alice", "down") == []
        assert await relay.history.load("alice", "down2") == []
        own_redis.start()  # back, on the same port (empty)
        await own_redis.ready()

        deadline = time.monotonic() + 20
        while (await c.get("/api/health")).status_code != 200:  # each check is a request answered: no fixed pause
            assert time.monotonic() < deadline, "health did not recover"
        async with c.stream("POST", "/api/chat/stream", json=body) as r:
            assert r.status_code == 200
            text = (await r.aread()).decode()
        assert '"done": true' in text
