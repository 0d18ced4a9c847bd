"""Refusing early and cheaply, through real uvicorn as ``tokenrelay serve`` runs it, with raw sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for_async
from tests.server.helpers import ListHandler, json_body, raw_exchange, serving, status_of, uvicorn_server
from tokenrelay.backends import Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.server import Relay, Settings
from tokenrelay.server.serve import RedactTokens, redact


def relay_of(**settings: Any) -> Relay:
    backend = SyntheticBackend(tokens=3, interval_ms=1)
    return Relay(backend, Settings(backend="synthetic", **settings))


def post(path: str, body: bytes, *, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


@contextmanager
def captured(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Records of the named loggers (uvicorn's do not propagate to the root logger, so caplog misses them)."""
    handler = ListHandler()
    records = handler.records
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def test_a_huge_header_is_refused_with_431_before_it_is_buffered() -> None:
    async with serving(relay_of()) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/health HTTP/1.1\r\nhost: t\r\nx-big: ")
        refused = b""
        sent = 0
        # 20 MB offered a MB at a time: the server must answer (and close) long before.
        while sent < 20 * 2**20:
            try:
                writer.write(b"a" * 2**20)
                await writer.drain()
            except ConnectionError:
                break
            sent += 2**20
            try:
                refused = await asyncio.wait_for(reader.read(65536), 0.05)
            except TimeoutError:
                continue
            break
        writer.close()
    assert status_of(refused) == 431
    assert sent <= 2 * 2**20
    assert json_body(refused)["error"]["code"] == "request_head_too_large"


async def test_too_many_headers_are_refused_with_431() -> None:
    async with serving(relay_of(max_headers=20)) as (_, port):
        many = "".join(f"x-h{i}: v\r\n" for i in range(30))
        response = await raw_exchange(port, f"GET /api/health HTTP/1.1\r\nhost: t\r\n{many}\r\n".encode())
        assert status_of(response) == 431
        fine = "".join(f"x-h{i}: v\r\n" for i in range(10))
        response = await raw_exchange(
            port, f"GET /api/health HTTP/1.1\r\nhost: t\r\n{fine}connection: close\r\n\r\n".encode()
        )
        assert status_of(response) == 200


async def test_a_slow_or_silent_connection_is_closed_after_the_head_timeout() -> None:
    async with serving(relay_of(head_timeout_s=0.3, keep_alive_s=0.3)) as (_, port):
        started = time.monotonic()
        silent = await raw_exchange(port, b"", timeout=5)
        assert silent == b""
        assert time.monotonic() - started < 3
        # Trickling bytes does not reset the clock.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/health HTTP/1.1\r\n")
        started = time.monotonic()
        answer = b""
        async with asyncio.timeout(5):
            while time.monotonic() - started < 3:
                writer.write(b"x-slow: 1\r\n")
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(65536), 0.1)
                except TimeoutError:
                    continue
                break
        writer.close()
        assert status_of(answer) == 408
        assert time.monotonic() - started < 2
        # An idle keep-alive connection is closed too (uvicorn's keep-alive timeout).
        response = await raw_exchange(port, b"GET /api/health HTTP/1.1\r\nhost: t\r\n\r\n", timeout=5)
        assert status_of(response) == 200


async def test_past_the_connection_limit_requests_get_a_json_503() -> None:
    async with serving(relay_of(max_connections=2)) as (_, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0)  # not a wait for an outcome: lets the server take the connections
        response = await raw_exchange(port, b"GET /api/health HTTP/1.1\r\nhost: t\r\n\r\n")
        for _, writer in held:
            writer.close()
    assert status_of(response) == 503
    assert b"retry-after: 1" in response.lower()
    assert json_body(response)["error"]["code"] == "overloaded"


async def test_http_10_gets_a_close_delimited_stream_with_one_connection_header() -> None:
    async with serving(relay_of()) as (_, port):
        body = b'{"message": "hi"}'
        request = post("/api/chat/stream", body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        response = await raw_exchange(port, request)
    head, _, payload = response.partition(b"\r\n\r\n")
    headers = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]
    assert status_of(response) == 200
    assert headers.count(b"connection") == 1
    assert b"connection: close" in head.lower()
    assert b"transfer-encoding" not in headers
    assert payload.rstrip().endswith(b"}")
    assert b'"done": true' in payload


async def test_a_body_over_the_limit_is_refused_before_it_is_sent() -> None:
    async with serving(relay_of(auth_tokens={"tok": "alice"})) as (_, port):
        huge = 300 * 2**20
        head = (
            f"POST /api/chat/stream HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {huge}\r\n"
        )
        # Without a token: 401 at once, not after 300 MB.
        started = time.monotonic()
        response = await raw_exchange(port, (head + "\r\n").encode(), first=True)
        assert status_of(response) == 401
        assert time.monotonic() - started < 2
        response = await raw_exchange(port, (head + "authorization: Bearer tok\r\n\r\n").encode(), first=True)
        assert status_of(response) == 413
        assert time.monotonic() - started < 4
        assert json_body(response)["error"]["code"] == "body_too_large"


async def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit() -> None:
    async with serving(relay_of(max_message_bytes=1024)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/chat/stream HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 4096
        for _ in range(4):  # 16 KB: past the limit (6 KB + 4 KB), never ended
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        async with asyncio.timeout(5):
            response = await reader.read(65536)
        writer.close()
    assert status_of(response) == 413


@pytest.mark.parametrize("path", ["/api/chat/stream", "/api/chat", "/v1/chat/completions"])
async def test_deep_json_is_a_400_not_a_recursion_error(path: str) -> None:
    relay = relay_of()
    async with (
        serving(relay) as (host, port),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client,
    ):
        for depth in (1000, 100_000):
            deep = b"[" * depth + b"]" * depth
            body = b'{"message": "hi", "x": ' + deep + b"}"
            r = await client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert "nested deeper" in r.text


@pytest.mark.parametrize("path", ["/api/chat/stream", "/api/chat", "/v1/chat/completions", "/api/runs/x/cancel"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_post_bodies_must_be_json(path: str, content_type: str) -> None:
    relay = relay_of()
    async with (
        serving(relay) as (host, port),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client,
    ):
        body = b'{"message": "hi", "model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        r = await client.post(path, content=body, headers={"content-type": content_type})
        assert r.status_code == 415, r.text
        assert relay.runs.active_runs == 0
        if path != "/api/runs/x/cancel":
            r = await client.post(path, content=body)  # no content type at all
            assert r.status_code == 415


async def test_state_changing_requests_from_another_origin_are_refused_when_cors_is_configured() -> None:
    relay = relay_of(cors_origins=["https://app.example"])
    async with (
        serving(relay) as (host, port),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client,
    ):
        body = {"message": "hi"}
        r = await client.post("/api/chat/stream", json=body, headers={"origin": "https://evil.example"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "origin_not_allowed")
        r = await client.delete("/api/conversations/c1", headers={"origin": "null"})
        assert r.status_code == 403
        for origin in ("https://app.example", f"http://{host}:{port}", None):
            headers = {"origin": origin} if origin else {}
            r = await client.post("/api/chat/stream", json=body, headers=headers)
            assert r.status_code == 200, (origin, r.text)
        # Reading is not state-changing: an EventSource from anywhere may still be refused by CORS, not here.
        r = await client.get("/api/health", headers={"origin": "https://evil.example"})
        assert r.status_code == 200


async def test_a_client_leaving_halfway_through_its_body_logs_no_exception() -> None:
    relay = relay_of()
    async with serving(relay) as (host, port):
        with captured("uvicorn.error", "tokenrelay") as records:  # once uvicorn has configured its loggers
            for path in ("/api/chat/stream", "/api/chat", "/v1/chat/completions"):
                _, writer = await asyncio.open_connection(host, port)
                writer.write(post(path, b"")[:-2].replace(b"content-length: 0", b"content-length: 100") + b'\r\n{"mes')
                await writer.drain()
                writer.close()
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
                assert (await client.get("/api/health")).status_code == 200
            assert relay.runs.active_runs == 0
    assert not [r for r in records if r.exc_info or "Exception" in r.getMessage()], [r.getMessage() for r in records]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"message": "a\\u0000b"}', "message"),
        ('{"message": "a\\ud800b"}', "message"),
        ('{"message": "ok", "conversation_id": "."}', "conversation_id"),
        ('{"message": "ok", "conversation_id": ".."}', "conversation_id"),
    ],
)
async def test_input_that_cannot_be_stored_is_a_422_naming_the_field(body: str, field: str) -> None:
    relay = relay_of()
    async with (
        serving(relay) as (host, port),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client,
    ):
        r = await client.post("/api/chat/stream", content=body, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), r.text
        chat = {
            "id": "c",
            "messages": [{"role": "user", "parts": [{"type": "text", "text": json.loads(body)["message"]}]}],
        }
        if field == "message":
            r = await client.post("/api/chat", content=json.dumps(chat), headers={"content-type": "application/json"})
            assert (r.status_code, r.json()["error"]["field"]) == (422, "messages")
            r = await client.get("/api/chat/stream", params={"message": "a\x00b"})
            assert (r.status_code, r.json()["error"]["field"]) == (422, "message")
        assert await relay.history.conversations("anonymous") == []


async def test_dot_ids_are_refused_in_paths() -> None:
    async with serving(relay_of()) as (_, port):
        for path in ("/api/conversations/%2E%2E/messages", "/api/conversations/%2E", "/api/chat/%2E/stream"):
            method = "DELETE" if path.count("/") == 3 else "GET"
            response = await raw_exchange(
                port, f"{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode()
            )
            assert status_of(response) == 422, (path, response)


async def test_the_chat_page_is_served_with_security_headers() -> None:
    async with (
        serving(relay_of()) as (host, port),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client,
    ):
        r = await client.get("/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_access_tokens_are_redacted_from_the_access_log() -> None:
    assert redact("/api/runs/r/stream?access_token=s3cret&x=1") == "/api/runs/r/stream?access_token=[redacted]&x=1"
    assert redact("/x?a=1&ACCESS_TOKEN=s3cret") == "/x?a=1&ACCESS_TOKEN=[redacted]"
    assert redact("/x?my_access_token=keep") == "/x?my_access_token=keep"
    relay = Relay(
        ScriptedBackend([TextDelta("a"), Pause(0.01), FinishEvent("stop")]),
        Settings(backend="synthetic", auth_tokens={"s3cret": "alice"}),
    )
    async with (
        serving(relay, log_level="info") as (host, port),
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as c,
    ):
        with captured("uvicorn.access") as records:  # once uvicorn has configured its loggers
            r = await c.get("/api/conversations", params={"access_token": "s3cret"})
            assert r.status_code == 200
    lines = [r.getMessage() for r in records]
    assert any("access_token=[redacted]" in line for line in lines), lines
    assert not any("s3cret" in line for line in lines)
    assert any(isinstance(f, RedactTokens) for f in logging.getLogger("uvicorn.access").filters)


async def test_the_protocol_adds_nothing_to_uvicorns_instance_dict() -> None:
    # uvicorn's protocol keeps its ~26 attributes in a dict whose keys every connection shares (at most 30); one more
    # of its own per connection would give each its own dict (~1.3 KB a connection): what the edge adds is in slots.
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from tokenrelay.server.edge import ConnectionLimits, http_protocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    config = Config(app)
    config.load()
    ours = http_protocol(ConnectionLimits())(config=config, server_state=ServerState(), app_state={})
    theirs = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    try:
        assert set(vars(ours)) <= set(vars(theirs))
        assert ours._in_head  # the edge's own state is there, in its slots
    finally:
        ours._disarm_head_timer()


async def test_pipelined_requests_on_one_connection_are_answered_in_order() -> None:
    # The second request waits in the protocol's pipeline (the edge's list) until the first is answered.
    async with serving(relay_of()) as (_, port):
        first = b"GET /api/health HTTP/1.1\r\nhost: t\r\n\r\n"
        second = b"GET /api/nowhere HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        response = await raw_exchange(port, first + second)
    assert [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)] == [200, 404]


async def test_a_client_that_stops_reading_pauses_the_stream_and_then_gets_all_of_it() -> None:
    # uvicorn's flow control (its writable event is a Latch) holds the stream while the client's socket
    # is full, and lets it go on once the client reads again: every token arrives, then the done frame.
    import socket

    from tokenrelay._latch import Latch

    tokens = 400_000
    relay = Relay(SyntheticBackend(tokens=tokens, interval_ms=0, token="x"), Settings(backend="synthetic"))
    async with uvicorn_server(relay) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        try:
            protocols = server.server_state.connections
            await wait_for_async(lambda: len(protocols) == 1, timeout=10, what="the server to take the connection")
            # A small send buffer on the server's side too, or the kernel takes megabytes before uvicorn must wait.
            for protocol in protocols:
                protocol.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            writer.write(b"GET /api/chat/stream?message=hi HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")

            def paused() -> bool:
                return any(p.flow is not None and p.flow.write_paused for p in protocols)

            await wait_for_async(paused, timeout=20, what="the server to stop writing to a full socket")
            flows = [p.flow for p in protocols if p.flow is not None]
            assert flows
            assert all(isinstance(f._is_writable_event, Latch) for f in flows)
            cycles = [p.cycle for p in protocols if p.cycle is not None]
            assert cycles
            assert all(isinstance(c.message_event, Latch) for c in cycles)
            async with asyncio.timeout(60):
                body = await reader.read(-1)
        finally:
            writer.close()
    assert sum(len(text) for text in re.findall(rb'"delta": ?"(x+)"', body)) == tokens
    assert b'"done": true' in body.rsplit(b"data: ", 1)[-1]


async def test_a_stream_is_written_on_its_request_task_and_a_hang_up_cancels_it(tmp_path: Any) -> None:
    # The edge watches the connection for the response (DISCONNECT_WATCH): no second task per stream waits on
    # receive(), and the connection lost cancels the response's own task, which releases the run's viewer.
    url = f"sqlite+aiosqlite:///{tmp_path}/history.db"  # the default history, on a file of the test's own
    settings = Settings(backend="synthetic", database_url=url, on_disconnect="cancel")
    relay = Relay(ScriptedBackend([TextDelta("a"), Pause(60)]), settings)

    def responses() -> list[str]:
        names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
        return [n for n in names if n.startswith("SSEResponse.")]

    async with serving(relay) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /api/chat/stream?message=hi HTTP/1.1\r\nhost: t\r\n\r\n")
            async with asyncio.timeout(10):
                got = b""
                while b'"delta"' not in got:
                    got += await reader.read(4096)
            assert responses() == []  # the writer is the request's task itself (run_asgi), not a task of its own
            assert relay.runs.active_runs == 1
            run = next(iter(relay.runs._runs.values()))
            assert run.subscribers == 1
        finally:
            writer.close()
        await wait_for_async(lambda: relay.runs.active_runs == 0, timeout=10, what="the hang-up to cancel the run")
        assert run.subscribers == 0
