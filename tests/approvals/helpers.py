"""What the approval tests share: a script whose tool needs approval, reading a seed stream frame by frame, and a
run followed until it pauses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tokenrelay.backends.scripted import Approval, ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta
from tokenrelay.sse import ServerSentEvent, SSEDecoder

CALL = "call_del_1"
ARGS = '{"path": "notes.txt"}'


def approval_script(record: Path) -> ScriptedBackend:
    """Says a sentence, asks to call ``delete_file`` (recording each real call in ``record``), then finishes."""
    return ScriptedBackend(
        [
            TextDelta("Let me delete it."),
            Approval(CALL, "delete_file", ARGS, output="deleted notes.txt", record=str(record)),
            TextDelta(" Done."),
            FinishEvent("stop"),
        ]
    )


def tool_runs(record: Path) -> list[str]:
    return record.read_text().split() if record.exists() else []


async def frames(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A seed stream's frames as they come: ``(id, payload)``."""
    decoder = SSEDecoder()
    async for chunk in response.aiter_raw():
        for event in decoder.feed(chunk):
            if isinstance(event, ServerSentEvent):
                yield event.id, json.loads(event.data)


class Follower:
    """Reads a seed stream in the background, so that a test can wait for a frame, act, and read on."""

    def __init__(self, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self.headers: httpx.Headers | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, method, url, kwargs))

    async def _read(self, client: httpx.AsyncClient, method: str, url: str, kwargs: dict[str, Any]) -> None:
        async with client.stream(method, url, **kwargs) as response:
            self.headers = response.headers
            self._changed.set()
            async for frame in frames(response):
                self.frames.append(frame)
                self._changed.set()

    async def until(self, key: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first frame with ``key``, waiting for it."""
        async with asyncio.timeout(timeout):
            while True:
                for _, payload in self.frames:
                    if key in payload:
                        return payload
                if self._task.done():
                    self._task.result()
                    raise AssertionError(f"the stream ended without a {key!r} frame: {self.frames}")
                self._changed.clear()
                await self._changed.wait()

    async def done(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        await asyncio.wait_for(self._task, timeout)
        return [payload for _, payload in self.frames]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def until_paused(
    client: httpx.AsyncClient, base: str = "", *, message: str = "delete notes", user_id: str = "ann", **body: Any
) -> tuple[str, Follower]:
    """Start a chat stream at ``base`` and follow it until the run pauses: the run's id and its follower, still
    reading (the caller closes it). The follower is closed here if the pause does not come."""
    follower = Follower(
        client, "POST", f"{base}/api/chat/stream", json={"message": message, "user_id": user_id, **body}
    )
    try:
        await follower.until("paused")
    except BaseException:
        await follower.close()
        raise
    assert follower.headers is not None
    return follower.headers["x-run-id"], follower


def keys(payloads: list[dict[str, Any]]) -> list[str]:
    return [next(iter(p)) for p in payloads]
