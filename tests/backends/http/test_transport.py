"""The lean HTTP/1.1 transport (``backends/_http.py``) against raw asyncio servers on free ports: what it reads,
what it reuses, and the httpx2 exceptions it raises where the default transport would raise them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx2
import pytest

from tokenrelay.backends._http import LeanTransport, lean_client, raw_chunks
from tokenrelay.backends._http_conn import HIGH_WATER

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw server: each connection runs ``handler``; counts connections and keeps what was asked."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head


@contextlib.asynccontextmanager
async def serve(handler: Handler, context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def ok(body: bytes, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    if b"transfer-encoding: chunked" in head.lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += data[:-2]
    return b""


async def test_keeps_the_connection_alive_and_reads_each_body_framing() -> None:
    bodies = [ok(b"first"), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in bodies:
            await server.head(reader)
            writer.write(response)
            await writer.drain()
        await reader.read()

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        first = await client.get(f"http://127.0.0.1:{server.port}/a?b=c")
        second = await client.get(f"http://127.0.0.1:{server.port}/x")
    assert (first.status_code, first.content, second.content) == (200, b"first", b"second")
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /a?b=c HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in server.requests[0].lower()


async def test_a_body_that_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
        again = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.content == again.content == b"until the end"
    assert server.connections == 2  # not reused: it ended with the body


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(ok(b"once"))
        await writer.drain()  # then close: the idle connection dies in the pool

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        url = f"http://127.0.0.1:{server.port}/"
        assert (await client.get(url)).content == b"once"
        await asyncio.wait_for(server.closed.wait(), 10)
        for _ in range(100):  # the EOF reaches the client's protocol on its next loop turns
            await asyncio.sleep(0)
        assert (await client.get(url)).content == b"once"
    assert server.connections == 2


async def test_posts_a_body_with_its_length_or_chunked() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            head = await server.head(reader)
            received.append(await read_body(reader, head))
            writer.write(ok(b"ok"))
            await writer.drain()
        await reader.read()

    async def parts() -> AsyncIterator[bytes]:
        yield b"streamed "
        yield b"body"

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        url = f"http://127.0.0.1:{server.port}/"
        await client.post(url, json={"a": 1})
        await client.post(url, content=parts())
    assert received == [b'{"a":1}', b"streamed body"]
    assert b"transfer-encoding: chunked" in server.requests[1].lower()


async def test_a_body_cut_in_the_middle_is_a_remote_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            got = b""
            with pytest.raises(httpx2.RemoteProtocolError):
                async for chunk in response.aiter_bytes():
                    got += chunk
    assert got == b"hello"


async def test_a_response_that_is_not_http_is_a_remote_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{server.port}/")


async def test_read_timeouts_on_the_head_and_on_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await server.head(reader)
        if b"/body" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
        await reader.read()

    timeout = httpx2.Timeout(5.0, read=0.3)
    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport(), timeout=timeout) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(f"http://127.0.0.1:{server.port}/head")
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(f"http://127.0.0.1:{server.port}/body")


async def test_the_read_timeout_is_the_longest_wait_for_data_not_the_whole_body() -> None:
    # One timer per connection moves with each read: a body that keeps coming outlives many timeouts, and a stall
    # is refused no sooner than the timeout after the last data.
    timeout_s, pace_s, parts = 0.6, 0.1, 12

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(parts):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(pace_s)
        await reader.read()  # then nothing more: a stall

    timeout = httpx2.Timeout(5.0, read=timeout_s)
    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport(), timeout=timeout) as client:
        loop = asyncio.get_running_loop()
        async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            chunks = raw_chunks(response)
            assert chunks is not None
            got = b""
            last = loop.time()
            with pytest.raises(httpx2.ReadTimeout):
                async for chunk in chunks:
                    got += chunk
                    last = loop.time()
            stalled = loop.time() - last
    assert got == b"x" * parts  # every part came, over longer than the timeout
    assert stalled >= timeout_s * 0.95


async def test_nothing_listening_is_a_connect_error() -> None:
    async with serve(lambda r, w: asyncio.sleep(0)) as server:
        port = server.port
    async with httpx2.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_a_header_that_would_split_the_request_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        request = client.build_request("GET", f"http://127.0.0.1:{server.port}/")
        request.headers["x-evil"] = "a\r\nInjected: 1"
        with pytest.raises(httpx2.LocalProtocolError):
            await client.send(request)
    assert server.requests == []


async def test_an_abandoned_body_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await reader.read()  # returns when the client closes

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            chunks = raw_chunks(response)
            assert chunks is not None
            assert await chunks.__anext__() == b"abc"
            await chunks.aclose()
        await asyncio.wait_for(server.closed.wait(), 10)


async def test_a_body_nobody_reads_stops_the_socket_being_read() -> None:
    written = asyncio.Event()
    stalled = asyncio.Event()
    size = 32 * 1024 * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            if writer.transport.get_write_buffer_size() > 4 * 1024 * 1024:
                stalled.set()  # the client stopped reading: the kernel buffers are full
                await writer.drain()
        await writer.drain()
        written.set()
        await reader.read()

    async with serve(handler) as server, httpx2.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            await asyncio.wait_for(stalled.wait(), 30)
            conn = response.extensions["tokenrelay.body"]._conn
            assert conn._buffered <= HIGH_WATER + 1024 * 1024
            assert not written.is_set()
            total = sum([len(chunk) async for chunk in response.aiter_raw()])
    assert total == size


async def test_the_pool_bound_waits_then_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()

    timeout = httpx2.Timeout(5.0, pool=0.3)
    transport = LeanTransport(max_connections=1)
    async with serve(handler) as server, httpx2.AsyncClient(transport=transport, timeout=timeout) as client:
        async with client.stream("GET", f"http://127.0.0.1:{server.port}/"):
            with pytest.raises(httpx2.PoolTimeout):
                await client.get(f"http://127.0.0.1:{server.port}/")


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_https_with_a_trusted_certificate_and_a_refused_one(tmp_path: Path) -> None:
    key, cert = _certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.head(reader)
        writer.write(ok(b"secret"))
        await writer.drain()
        await reader.read()

    async with serve(handler, server_context) as server:
        url = f"https://localhost:{server.port}/"
        trusted = ssl.create_default_context(cafile=str(cert))
        async with httpx2.AsyncClient(transport=LeanTransport(verify=trusted)) as client:
            assert (await client.get(url)).content == b"secret"
        async with httpx2.AsyncClient(transport=LeanTransport()) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.get(url)


async def test_a_proxy_in_the_environment_keeps_the_default_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    lean = lean_client(httpx2.AsyncClient)
    assert isinstance(lean._transport, LeanTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    proxied = lean_client(httpx2.AsyncClient)
    assert not isinstance(proxied._transport, LeanTransport)
    await lean.aclose()
    await proxied.aclose()
