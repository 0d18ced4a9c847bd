"""tokenrelay behind nginx, configured with the shipped docs/nginx.conf: Debian's nginx as a process of the test's own
(non-root paths, a free port) in front of two ``tokenrelay serve`` instances sharing a redis-server of their own.

The file is used as it ships, with only its ports and its read timeout (2 s here, to be outlasted) replaced; each
replacement must match exactly once, so a change to the file is a change to what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, free_port, wait_for
from tests.own_redis import RedisProcess
from tokenrelay.sse import Comment, ServerSentEvent, SSEDecoder

CONF = Path(__file__).resolve().parents[2] / "docs" / "nginx.conf"
READ_TIMEOUT_S = 2
HEARTBEAT_S = 0.5
DETACH_GRACE_S = 1.0
LONG_GRACE_S = 60.0
USER = "u"
SCRIPT = {
    # a first token, then a silence longer than any buffering could hide
    "fast": [{"type": "text-delta", "text": "first "}, {"pause": 2.0}, {"type": "text-delta", "text": "second"}],
    # eight tokens a quarter of a second apart
    "slow": [step for i in range(8) for step in ({"type": "text-delta", "text": f"t{i} "}, {"pause": 0.25})],
    # silent for longer than nginx's read timeout
    "idle": [
        {"type": "text-delta", "text": "a "},
        {"pause": READ_TIMEOUT_S + 1.5},
        {"type": "text-delta", "text": "b"},
    ],
    # 20 s of "x ", one every 50 ms: still going while a test acts on it
    "long": [step for _ in range(400) for step in ({"type": "text-delta", "text": "x "}, {"pause": 0.05})],
}


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        reason = "nginx is not installed (make nginx)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def templated(conf: str, upstreams: tuple[int, int], port: int) -> str:
    """docs/nginx.conf with the test's ports and read timeout: every replacement must match exactly once."""
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstreams[0]};",
        "server 127.0.0.1:8001;": f"server 127.0.0.1:{upstreams[1]};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "proxy_read_timeout 60s;": f"proxy_read_timeout {READ_TIMEOUT_S}s;",
    }
    for old, new in replacements.items():
        assert conf.count(old) == 1, f"docs/nginx.conf should have {old!r} once"
        conf = conf.replace(old, new)
    return conf


def main_conf(tmp: Path) -> str:
    """The http context around the shipped file, with every path nginx writes to inside ``tmp``."""
    temp = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"worker_processes 1;\nerror_log {tmp}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  log_format upstream '$request_method $uri $upstream_addr $status';\n"
        f"  access_log {tmp}/access.log upstream;\n  {temp}\n  include {tmp}/tokenrelay.conf;\n}}\n"
    )


@dataclass
class Deployment:
    proxy: str
    instances: tuple[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    log: Path = Path()

    async def upstream_of(self, method: str, path: str, nth: int) -> str:
        """The instance (host:port) that served the ``nth`` ``method path`` request, from nginx's access log."""
        for _ in range(200):  # each look is a read of the log nginx writes as each request ends
            lines = [line.split() for line in self.log.read_text().splitlines()] if self.log.exists() else []
            served = [addr for m, p, addr, *_ in lines if (m, p) == (method, path)]
            if len(served) >= nth:
                return served[nth - 1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"nginx did not log {method} {path} #{nth}")

    def health(self, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{instance}/api/health", timeout=5).json()
        return result


def _instance(
    tmp: Path, n: int, redis: RedisProcess, script: Path, db: Path, policy: tuple[str, ...]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        *(sys.executable, "-m", "tokenrelay", "serve", "--port", str(port), "--backend", "synthetic"),
        *("--synthetic-script", str(script), "--store", "redis", "--redis-url", redis.url),
        *("--heartbeat-s", str(HEARTBEAT_S), "--liveness-s", "1.5", *policy),
        *("--database-url", f"sqlite+aiosqlite:///{db}", "--log-level", "warning"),
        *("--shutdown-grace-s", "0.5"),
    ]
    with (tmp / f"instance-{n}.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp / f"instance-{n}.log").read_text()
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
        return False

    wait_for(up, timeout=90, what=f"instance {n}")
    return proc, url


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two instances with the default disconnect policy (``detach``, a short grace) behind nginx."""
    with deploy(tmp_path_factory.mktemp("nginx"), "--detach-grace-s", str(DETACH_GRACE_S)) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def cancelling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two instances with ``--on-disconnect cancel`` behind nginx; a grace far longer than any test, so that a
    prompt end can only be the policy's."""
    policy = ("--on-disconnect", "cancel", "--detach-grace-s", str(LONG_GRACE_S))
    with deploy(tmp_path_factory.mktemp("nginx-cancel"), *policy) as deployment:
        yield deployment


@contextlib.contextmanager
def deploy(tmp: Path, *policy: str) -> Iterator[Deployment]:
    """nginx with docs/nginx.conf in front of two instances started with ``policy``, and a redis-server of its own."""
    nginx = nginx_binary()
    script, db = tmp / "script.json", tmp / "history.db"
    script.write_text(json.dumps(SCRIPT))
    redis = RedisProcess()
    redis.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(redis._answers, timeout=10, what="redis-server")
        a, url_a = _instance(tmp, 0, redis, script, db, policy)  # first alone: it migrates the history
        processes.append(a)
        b, url_b = _instance(tmp, 1, redis, script, db, policy)
        processes.append(b)
        port = free_port()
        upstreams = (int(url_a.rsplit(":", 1)[1]), int(url_b.rsplit(":", 1)[1]))
        (tmp / "tokenrelay.conf").write_text(templated(CONF.read_text(), upstreams, port))
        (tmp / "nginx.conf").write_text(main_conf(tmp))
        command = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")]
        with (tmp / "nginx.out").open("wb") as out:
            proxy = subprocess.Popen([*command, "-g", f"daemon off; pid {tmp}/nginx.pid;"], stdout=out, stderr=out)
        processes.append(proxy)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proxy.poll() is None, (tmp / "nginx.out").read_text()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
            return False

        wait_for(up, timeout=30, what="nginx")
        yield Deployment(url, (url_a, url_b), processes, tmp / "access.log")
    finally:
        # SIGTERM: nginx's master stops its workers before it exits (killed, it would leave them behind).
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        redis.kill()


@dataclass
class Stream:
    """A stream's frames as they come: (arrival time, payload with its id), its heartbeats, its run id."""

    frames: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    pings: int = 0
    run_id: str = ""
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    def deltas(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, f in self.frames if "delta" in f]

    def text(self) -> str:
        return "".join(str(f["delta"]) for _, f in self.deltas())

    async def until(self, deltas: int, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while len(self.deltas()) < deltas:
                self.grew.clear()
                await self.grew.wait()


async def read(response: httpx.Response, stream: Stream) -> None:
    assert response.status_code == 200, await response.aread()
    stream.run_id = response.headers.get("x-run-id", "")
    decoder = SSEDecoder(comments=True)
    async for chunk in response.aiter_raw():
        now = time.monotonic()
        for frame in decoder.feed(chunk):
            if isinstance(frame, Comment):
                stream.pings += 1
            elif isinstance(frame, ServerSentEvent):
                stream.frames.append((now, {**json.loads(frame.data), "id": frame.id}))
        stream.grew.set()


async def ask(client: httpx.AsyncClient, base: str, message: str, **body: Any) -> tuple[float, Stream]:
    """One whole answer; how long its first delta took, and the stream."""
    stream, started = Stream(), time.monotonic()
    async with client.stream(
        "POST", f"{base}/api/chat/stream", json={"message": message, "user_id": USER, **body}
    ) as r:
        await read(r, stream)
    return stream.deltas()[0][0] - started, stream


async def test_tokens_come_through_nginx_as_soon_as_directly_and_one_by_one(deployment: Deployment) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        direct = [await ask(client, deployment.instances[0], "fast") for _ in range(2)]
        proxied = [await ask(client, deployment.proxy, "fast") for _ in range(2)]
        _, slow = await ask(client, deployment.proxy, "slow")
    for _, stream in [*direct, *proxied]:
        (first_at, first), (second_at, _) = stream.deltas()
        assert first["delta"] == "first "
        assert second_at - first_at > 1.0  # the first token did not wait for the second, 2 s later
    first_direct = min(t for t, _ in direct)
    first_proxied = min(t for t, _ in proxied)
    assert first_proxied < first_direct + 0.5, (first_proxied, first_direct)
    # Eight tokens 250 ms apart arrive as eight separate writes, spread over their 2 s, not together at the end.
    times = [t for t, _ in slow.deltas()]
    assert slow.text() == "".join(f"t{i} " for i in range(8))
    assert len(times) == 8
    assert all(b - a > 0.1 for a, b in itertools.pairwise(times)), times


async def test_a_resume_through_nginx_reaches_the_other_instance(deployment: Deployment) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        first = Stream()
        body = {"message": "long", "user_id": USER}
        async with client.stream("POST", f"{deployment.proxy}/api/chat/stream", json=body) as r:
            reading = asyncio.create_task(read(r, first))
            await first.until(3)
            owner = next(u for u in deployment.instances if deployment.health(u)["active_runs"] == 1)
            (other,) = set(deployment.instances) - {owner}
            rest = await _resume_on(client, deployment, first.run_id, other)
            cancel = await client.post(f"{deployment.proxy}/api/runs/{first.run_id}/cancel", params={"user_id": USER})
            assert cancel.json() == {"run_id": first.run_id, "cancelled": True}
            await asyncio.wait_for(reading, 15)
    assert first.frames[-1][1]["finish_reason"] == "cancelled"
    last = max(int(f["id"]) for _, f in rest.deltas())
    assert rest.text() == "x " * (last - 2)  # exactly the deltas after event 2, from the other instance


async def _resume_on(client: httpx.AsyncClient, deployment: Deployment, run_id: str, other: str) -> Stream:
    """Resume ``run_id`` from event 2 through nginx until the resume is served by ``other`` (round robin: soon)."""
    url = f"{deployment.proxy}/api/runs/{run_id}/stream"
    for attempt in range(1, 7):
        stream = Stream()
        headers, params = {"last-event-id": "2"}, {"user_id": USER}
        async with client.stream("GET", url, headers=headers, params=params) as r:
            reading = asyncio.create_task(read(r, stream))
            await stream.until(3)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.TransportError):
                await reading
        # nginx logs the request, with the instance that served it, once it is over.
        if await deployment.upstream_of("GET", f"/api/runs/{run_id}/stream", attempt) == other.split("//")[1]:
            return stream
    raise AssertionError("six resumes through nginx, none reached the other instance")


async def test_an_idle_stream_outlives_the_proxy_read_timeout_thanks_to_heartbeats(deployment: Deployment) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        _, stream = await ask(client, deployment.proxy, "idle")
    assert stream.text() == "a b"
    assert stream.frames[-1][1]["finish_reason"] == "stop"
    assert stream.pings >= 3  # a ping every 0.5 s of the 3.5 s silence kept nginx's 2 s read timeout away


async def leave_mid_answer(client: httpx.AsyncClient, deployment: Deployment, conversation: str) -> Left:
    """Start the long answer through nginx, read three deltas, close the connection; wait for the answer's save."""
    stream = Stream()
    body = {"message": "long", "user_id": USER, "conversation_id": conversation}
    async with client.stream("POST", f"{deployment.proxy}/api/chat/stream", json=body) as r:
        reading = asyncio.create_task(read(r, stream))
        await stream.until(3)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    left = time.monotonic()  # the connection to nginx is closed here, mid-answer
    messages_url = f"{deployment.proxy}/api/conversations/{conversation}/messages"
    for _ in range(150):  # each check is a request answered
        messages = (await client.get(messages_url, params={"user_id": USER})).json()["messages"]
        if messages[-1]["role"] == "assistant":
            break
        await asyncio.sleep(0.1)
    return Left(stream, time.monotonic() - left, messages[-1])


@dataclass
class Left:
    stream: Stream  # what the client read before it left
    took: float  # seconds from leaving to the answer's save
    answer: dict[str, Any]  # the saved answer


async def test_a_client_that_leaves_through_nginx_detaches_the_run_which_is_cancelled_after_the_grace(
    deployment: Deployment,
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        left = await leave_mid_answer(client, deployment, "leaving")
    assert left.answer["status"] == "cancelled", left.answer
    # Not at once (the run waited for a resume during the grace), and long before the answer's 20 s.
    assert DETACH_GRACE_S * 0.8 < left.took < DETACH_GRACE_S + 8, left.took
    assert all(deployment.health(u)["active_runs"] == 0 for u in deployment.instances)


async def test_with_the_cancel_policy_a_client_that_leaves_through_nginx_stops_the_model_at_once(
    cancelling: Deployment,
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        left = await leave_mid_answer(client, cancelling, "stopping")
        # The run's own log, read afterwards: what the model said before it was stopped, and its finish.
        log = Stream()
        url = f"{cancelling.proxy}/api/runs/{left.stream.run_id}/stream"
        async with client.stream("GET", url, params={"user_id": USER}, headers={"last-event-id": "0"}) as r:
            await read(r, log)
    assert left.answer["status"] == "cancelled", left.answer
    # Well within the 60 s grace, which the run did not wait for (a loaded machine is given a few seconds).
    assert left.took < 8, left.took
    assert log.frames[-1][1]["done"] is True
    assert log.frames[-1][1]["finish_reason"] == "cancelled"
    # The model stopped: the saved answer is what the run said, a few tokens of its 400, and nothing came after.
    said = log.text()
    assert left.answer["content"] == said
    assert said == "x " * (len(said) // 2)
    assert len(left.stream.text()) <= len(said) < len("x " * 400) // 2, (len(left.stream.text()), len(said))
    assert all(cancelling.health(u)["active_runs"] == 0 for u in cancelling.instances)
