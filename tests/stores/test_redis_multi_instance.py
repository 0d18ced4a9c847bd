"""Two real server processes sharing the real Redis: any instance serves any run, and a dead one is noticed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx

from tests.conftest import REDIS_URL
from tests.proxy import CuttingProxy
from tests.stores.redis_helpers import eventually, raw_redis
from tokenrelay.client import AsyncClient, Delta, Done, Resume
from tokenrelay.sse import ServerSentEvent, SSEDecoder

LIVENESS_S = 1.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def instances(prefix: str, *flags: str, count: int = 2) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """``count`` ``tokenrelay serve`` processes on one Redis prefix (and one SQLite history file)."""
    env = {**os.environ, "TOKENRELAY_STORE": "redis", "TOKENRELAY_REDIS_URL": REDIS_URL}
    env["TOKENRELAY_REDIS_PREFIX"] = prefix
    env["TOKENRELAY_LIVENESS_S"] = str(LIVENESS_S)
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tokenrelay", "serve", "--backend", "synthetic", "--port", str(port), *flags],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            procs.append((proc, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 30
        for proc, url in procs:
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise AssertionError(f"server exited: {err}")
                try:
                    if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("timed out waiting for the servers to start")
                time.sleep(0.05)
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def frames(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_raw():
        for item in decoder.feed(chunk):
            if isinstance(item, ServerSentEvent):
                yield item


def text(events: list[ServerSentEvent]) -> str:
    return "".join(json.loads(e.data).get("delta", "") for e in events)


SLOW = ("--synthetic-tokens", "40", "--synthetic-interval-ms", "25")


async def test_start_on_one_instance_drop_and_resume_on_the_other(redis_prefix: str) -> None:
    with instances(redis_prefix, *SLOW, "--on-disconnect", "detach") as [(_, a), (_, b)]:
        async with httpx.AsyncClient(timeout=20) as client:
            body = {"message": "hi", "user_id": "ann", "conversation_id": "c-1"}
            async with client.stream("POST", f"{a}/api/chat/stream", json=body) as r:
                run_id = r.headers["x-run-id"]
                seen: list[ServerSentEvent] = []
                async for event in frames(r):
                    seen.append(event)
                    if len(seen) == 3:
                        break  # the phone switches networks
            headers = {"last-event-id": seen[-1].id}
            url = f"{b}/api/runs/{run_id}/stream"
            async with client.stream("GET", url, headers=headers, params={"user_id": "ann"}) as r:
                assert r.status_code == 200
                rest = [e async for e in frames(r)]
            assert [int(e.id) for e in rest] == sorted({int(e.id) for e in rest})
            assert int(rest[0].id) > int(seen[-1].id)
            # The same question asked on B in one go: the resumed answer is byte for byte the same.
            body = {"message": "hi", "user_id": "ann", "conversation_id": "c-2"}
            async with client.stream("POST", f"{b}/api/chat/stream", json=body) as r:
                whole = [e async for e in frames(r)]
            assert text(seen) + text(rest) == text(whole)
            done, whole_done = json.loads(rest[-1].data), json.loads(whole[-1].data)
            assert done["run_id"] == run_id
            assert {**done, "run_id": "", "conversation_id": ""} == {**whole_done, "run_id": "", "conversation_id": ""}
            # The answer was saved once, whichever instance served it; both see it.
            for url in (a, b):
                r = await client.get(f"{url}/api/conversations/c-1/messages", params={"user_id": "ann"})
                messages = r.json()["messages"]
                assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "complete")]
                assert messages[1]["content"] == text(whole)


async def test_the_client_resumes_on_another_instance_behind_a_load_balancer(redis_prefix: str) -> None:
    with instances(redis_prefix, *SLOW, "--on-disconnect", "detach") as [(_, a), (_, b)]:
        port = lambda url: int(url.rsplit(":", 1)[1])  # noqa: E731
        proxy = CuttingProxy("127.0.0.1", port(a), also=[("127.0.0.1", port(b))])
        async with proxy.serve() as balanced:
            proxy.cut_next(500)
            async with AsyncClient(balanced, resume=Resume(backoff_s=0.01)) as client:
                events = [e async for e in client.stream_chat("hi")]
        async with AsyncClient(b) as client:
            again = await client.chat("hi")
    assert proxy.cut == 1
    assert proxy.connections == 2  # the POST went to A, the resume to B
    ids = [int(e.id) for e in events if isinstance(e, Delta | Done)]
    assert ids == sorted(set(ids))
    assert "".join(e.text for e in events if isinstance(e, Delta)) == again.text
    assert isinstance(events[-1], Done)
    assert events[-1].finish_reason == "stop"


async def test_cancel_on_one_instance_stops_the_run_on_the_other(redis_prefix: str) -> None:
    with instances(redis_prefix, "--synthetic-tokens", "400", "--synthetic-interval-ms", "20") as [(_, a), (_, b)]:
        async with httpx.AsyncClient(timeout=20) as client:
            async with client.stream("POST", f"{a}/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]
                stream = frames(r)
                await anext(stream)
                started = time.monotonic()
                cancel = await client.post(f"{b}/api/runs/{run_id}/cancel")
                assert cancel.json() == {"run_id": run_id, "cancelled": True}
                rest = [e async for e in stream]
            assert time.monotonic() - started < 3
            assert json.loads(rest[-1].data)["finish_reason"] == "cancelled"
            assert (await client.get(f"{a}/api/health")).json()["active_runs"] == 0


async def test_with_cancel_on_disconnect_a_run_lives_while_anyone_anywhere_watches(redis_prefix: str) -> None:
    flags = ("--synthetic-tokens", "400", "--synthetic-interval-ms", "20", "--on-disconnect", "cancel")
    with instances(redis_prefix, *flags) as [(_, a), (_, b)]:
        async with httpx.AsyncClient(timeout=20) as client:
            async with client.stream("POST", f"{a}/api/chat/stream", json={"message": "hi"}) as r:
                run_id = r.headers["x-run-id"]
                on_a = frames(r)  # kept: a dropped generator closes its response, which is a disconnect
                await anext(on_a)
                watcher = client.stream("GET", f"{b}/api/runs/{run_id}/stream")
                on_b = await watcher.__aenter__()
                watching = frames(on_b)
                await anext(watching)
            # The viewer on A left; the one on B keeps the run going.
            async with raw_redis() as redis:
                meta = f"{redis_prefix}run:{{{run_id}}}:meta"

                async def one_viewer_left() -> bool:
                    return await redis.hget(meta, "viewers") == b"1"

                # A counts its viewer out and, seeing one left, goes on: no cancel can follow from it.
                await eventually(one_viewer_left, timeout=5, what="A to count its viewer out")
            assert (await client.get(f"{a}/api/health")).json()["active_runs"] == 1
            await anext(watching)
            await watcher.__aexit__(None, None, None)  # now nobody watches: the owner cancels

            async def no_active_runs() -> bool:
                return (await client.get(f"{a}/api/health")).json()["active_runs"] == 0

            await eventually(no_active_runs, timeout=5, what="the owner to cancel the run")
            r = await client.get(f"{b}/api/runs/{run_id}/stream", headers={"last-event-id": "0"})
            assert json.loads(r.text.strip().rsplit("data: ", 1)[1])["finish_reason"] == "cancelled"


async def test_a_killed_instance_is_noticed_and_readers_elsewhere_end_cleanly(redis_prefix: str) -> None:
    with instances(redis_prefix, "--synthetic-tokens", "400", "--synthetic-interval-ms", "20") as [(pa, a), (_, b)]:
        async with httpx.AsyncClient(timeout=20) as client:
            body = {"message": "hi", "user_id": "ann", "conversation_id": "c-k"}
            async with client.stream("POST", f"{a}/api/chat/stream", json=body) as on_a:
                run_id = on_a.headers["x-run-id"]
                reading_a = frames(on_a)  # kept: a dropped generator closes its response, which is a disconnect
                await anext(reading_a)
                async with client.stream("GET", f"{b}/api/runs/{run_id}/stream", params={"user_id": "ann"}) as r:
                    watching = frames(r)
                    seen = [await anext(watching)]
                    pa.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    seen += [e async for e in watching]
                    ended = time.monotonic() - killed
            assert ended < LIVENESS_S + 2.5
            error, done = json.loads(seen[-2].data), json.loads(seen[-1].data)
            assert error["error"]["code"] == "interrupted"
            assert error["error"]["retryable"] is True
            assert done["done"] is True
            assert done["finish_reason"] == "error"
            # The instance that noticed saved the partial answer, marked.
            r = await client.get(f"{b}/api/conversations/c-k/messages", params={"user_id": "ann"})
            last = r.json()["messages"][-1]
            assert (last["role"], last["status"], last["error_code"]) == ("assistant", "failed", "interrupted")
            assert last["content"]
            assert "You said: hi. ".startswith(last["content"]) or last["content"].startswith("You said: hi. ")
            # A later resume anywhere sees the same ending.
            r = await client.get(f"{b}/api/runs/{run_id}/stream", params={"user_id": "ann", "last_event_id": "0"})
            assert r.status_code == 200
            assert '"code": "interrupted"' in r.text
