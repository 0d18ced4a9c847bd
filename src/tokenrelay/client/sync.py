"""The sync client: the core's loop over ``httpx.Client``, the twin of :mod:`tokenrelay.client.aio`."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import httpx

from tokenrelay.client import core
from tokenrelay.client.errors import unreachable
from tokenrelay.client.events import ChatResult, StreamEvent
from tokenrelay.client.shell import Shell
from tokenrelay.client.stream import RunStream

__all__ = ["Client"]


class Client(Shell[httpx.Client, RunStream]):
    """The synchronous twin of :class:`~tokenrelay.client.AsyncClient`, resuming cut streams the same way."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (also those of an ``http`` client passed in)."""
        self._http.close()

    def chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> ChatResult:
        """The whole answer, collected from :meth:`stream_chat`."""
        result = ChatResult("", "", None, None)
        stream = self.stream_chat(message, user_id=user_id, conversation_id=conversation_id)
        for event in stream:
            result.add(event)
        result.run_id = result.run_id or stream.run_id
        result.conversation_id = result.conversation_id or stream.conversation_id
        return result

    def cancel(self, run_id: str, *, user_id: str | None = None) -> bool:
        """Stop a run, wherever it runs; ``False`` if it was not running."""
        return core.cancelled(self._send(core.cancel_request(run_id, user_id)))

    def approve(
        self, run_id: str, call_id: str, approved: bool = True, *, reason: str | None = None, user_id: str | None = None
    ) -> str:
        """Answer a tool call the run waits for (see :meth:`AsyncClient.approve`)."""
        return core.approved(self._send(core.approval_request(run_id, call_id, approved, reason, user_id)))

    def health(self) -> dict[str, Any]:
        """The server's ``/api/health`` report."""
        return core.health(self._send(core.HEALTH))

    def _open(self, options: dict[str, Any]) -> httpx.Client:
        return httpx.Client(**options)

    def _send(self, request: core.Request) -> httpx.Response:
        try:
            return self._http.request(**request.httpx_args())
        except httpx.ConnectError as exc:
            raise unreachable(self._http.base_url, exc) from exc

    def _follow(self, attempts: core.Attempts) -> RunStream:
        return RunStream(attempts, self._events(attempts), self._send)

    def _events(self, attempts: core.Attempts) -> Generator[StreamEvent, None, None]:
        while (request := attempts.next_request()) is not None:
            if request.delay:
                time.sleep(request.delay)
            try:
                with self._http.stream(**request.httpx_args()) as response:
                    if not attempts.accepts(response):
                        attempts.refused(response, response.read())
                        continue
                    if cancel := attempts.pending_cancel():
                        self._send(cancel)
                    for chunk in response.iter_raw():
                        yield from attempts.feed(chunk)
            except httpx.TransportError as exc:
                attempts.failed(exc, self._http.base_url)
        attempts.end()
