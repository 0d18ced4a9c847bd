"""SIGTERM with runs in flight: a real ``python -m tokenrelay serve`` process, stopped by its pid."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port, wait_for
from tests.server.helpers import payloads, read_stream
from tokenrelay.history.sql import SQLHistory
from tokenrelay.sse import ServerSentEvent, SSEDecoder


def start_server(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        *("-m", "tokenrelay", "serve", "--backend", "synthetic", "--port", str(port)),
        # A long answer: still going when SIGTERM comes.
        *("--synthetic-tokens", "2000", "--synthetic-interval-ms", "20"),
        *extra,
    ]
    stderr = (tmp_path / "stderr.log").open("wb")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "stderr.log").read_text()
        try:
            return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30, what="the server to start")
    return process, url


async def test_sigterm_ends_every_stream_with_a_retryable_shutdown_and_saves_the_partial_answers(
    tmp_path: Path,
) -> None:
    process, url = start_server(tmp_path, "--shutdown-grace-s", "0.5")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            answering = [asyncio.Event() for _ in range(3)]

            async def follow(n: int) -> tuple[str, list[dict[str, object]]]:
                body = {"message": f"question {n}", "user_id": "alice", "conversation_id": f"conv-{n}"}
                async with client.stream("POST", "/api/chat/stream", json=body) as r:
                    decoder, events = SSEDecoder(), []
                    async for chunk in r.aiter_raw():
                        events.extend(decoder.feed(chunk))
                        if any(isinstance(e, ServerSentEvent) and '"delta"' in e.data for e in events):
                            answering[n].set()  # the answer has begun: what is cut from here on is partial
                    return f"conv-{n}", payloads(events)

            streams = [asyncio.create_task(follow(n)) for n in range(3)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in answering)), 15)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            results = await asyncio.wait_for(asyncio.gather(*streams), 15)
        code = await asyncio.to_thread(process.wait, 15)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "Exception in ASGI application" not in stderr
    assert took < 10
    history = SQLHistory(os.environ["TOKENRELAY_DATABASE_URL"])
    try:
        for conversation, frames in results:
            error, done = frames[-2], frames[-1]
            assert set(error) == {"error"}
            assert isinstance(error["error"], dict)
            assert (error["error"]["code"], error["error"]["retryable"]) == ("shutdown", True)
            assert done["done"] is True
            assert done["finish_reason"] == "error"
            text = "".join(str(f["delta"]) for f in frames if "delta" in f)
            assert text
            stored = await history.load("alice", conversation)
            assert [m.role for m in stored] == ["user", "assistant"]
            assert stored[1].content == text  # what the viewer saw is what was saved
            assert stored[1].status == "failed"
    finally:
        await history.close()


async def test_sigterm_lets_a_run_finish_within_its_grace(tmp_path: Path) -> None:
    process, url = start_server(tmp_path, "--shutdown-grace-s", "10", "--synthetic-tokens", "40")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            async with client.stream("POST", "/api/chat/stream", json={"message": "hi"}) as r:
                process.send_signal(signal.SIGTERM)
                frames = payloads(await read_stream(r))
        code = await asyncio.to_thread(process.wait, 15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    assert frames[-1]["finish_reason"] == "stop"
    assert not any("error" in f for f in frames), json.dumps(frames)[:500]
