"""The async client: the core's loop over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from tokenrelay.client import core
from tokenrelay.client.errors import unreachable
from tokenrelay.client.events import ChatResult, StreamEvent
from tokenrelay.client.shell import Shell
from tokenrelay.client.stream import AsyncRunStream

__all__ = ["AsyncClient"]


class AsyncClient(Shell[httpx.AsyncClient, AsyncRunStream]):
    """``async for event in client.stream_chat("hi"): ...``

    A stream cut before its done frame (a network switch, a proxy's idle timeout, a restarted instance) is resumed
    by itself from the last event id (``resume``); the caller sees one unbroken stream. ``token`` is sent as a
    bearer token.

    Stop is ``await stream.cancel()`` (or :meth:`cancel` with the run's id): leaving the loop only closes the
    connection, and the server keeps the run for a resume (see :mod:`tokenrelay.client.stream`).
    """

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (also those of an ``http`` client passed in)."""
        await self._http.aclose()

    async def chat(self, message: str, *, user_id: str | None = None, conversation_id: str | None = None) -> ChatResult:
        """The whole answer, collected from :meth:`stream_chat`."""
        result = ChatResult("", "", None, None)
        stream = self.stream_chat(message, user_id=user_id, conversation_id=conversation_id)
        async for event in stream:
            result.add(event)
        result.run_id = result.run_id or stream.run_id
        result.conversation_id = result.conversation_id or stream.conversation_id
        return result

    async def cancel(self, run_id: str, *, user_id: str | None = None) -> bool:
        """Stop a run, wherever it runs; ``False`` if it was not running."""
        return core.cancelled(await self._send(core.cancel_request(run_id, user_id)))

    async def approve(
        self, run_id: str, call_id: str, approved: bool = True, *, reason: str | None = None, user_id: str | None = None
    ) -> str:
        """Answer the approval request of ``call_id`` (an :class:`~tokenrelay.client.events.ApprovalRequest`): the
        run goes on once every call it waits for is answered. ``"recorded"``, ``"resumed"`` or ``"unchanged"`` (the
        same answer was given already); :class:`TokenrelayHTTPError` 404 / 409 when there is no such call waiting /
        it was answered otherwise."""
        return core.approved(await self._send(core.approval_request(run_id, call_id, approved, reason, user_id)))

    async def health(self) -> dict[str, Any]:
        """The server's ``/api/health`` report."""
        return core.health(await self._send(core.HEALTH))

    def _open(self, options: dict[str, Any]) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def _send(self, request: core.Request) -> httpx.Response:
        try:
            return await self._http.request(**request.httpx_args())
        except httpx.ConnectError as exc:
            raise unreachable(self._http.base_url, exc) from exc

    def _follow(self, attempts: core.Attempts) -> AsyncRunStream:
        return AsyncRunStream(attempts, self._events(attempts), self._send)

    async def _events(self, attempts: core.Attempts) -> AsyncGenerator[StreamEvent, None]:
        while (request := attempts.next_request()) is not None:
            if request.delay:
                await asyncio.sleep(request.delay)
            try:
                async with self._http.stream(**request.httpx_args()) as response:
                    if not attempts.accepts(response):
                        attempts.refused(response, await response.aread())
                        continue
                    if cancel := attempts.pending_cancel():
                        await self._send(cancel)
                    async for chunk in response.aiter_raw():
                        for event in attempts.feed(chunk):
                            yield event
            except httpx.TransportError as exc:
                attempts.failed(exc, self._http.base_url)
        attempts.end()
