"""A followed run as the caller holds it: an iterator of events that also knows its run and can stop it.

Stop and leaving are two different things, as on the server:

- ``stream.cancel()`` is the Stop: it asks the server to cancel the run (``POST /api/runs/{id}/cancel``), which
  reaches the model at once on whichever instance runs it. The stream then goes on to the run's done frame, with
  ``finish_reason`` ``"cancelled"`` (or whatever ending came first).
- Leaving the loop (``break``, ``close()``, an exception in the caller's code, a cancelled task or a timeout) only
  closes the connection. To the server that is a dropped connection, and its on-disconnect policy applies (by
  default the run goes on for a grace period, so that a resume — ``client.stream_run(stream.run_id,
  after=int(stream.last_event_id))`` — gets the whole answer). A loop is left for many reasons that are not a
  person's Stop, which is why leaving never cancels.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import httpx

from tokenrelay.client import core
from tokenrelay.client.events import StreamEvent

__all__ = ["AsyncRunStream", "RunStream"]


class _Followed:
    """What both streams know of their run, from the core's attempts."""

    def __init__(self, attempts: core.Attempts) -> None:
        self._attempts = attempts

    @property
    def run_id(self) -> str | None:
        """The run's id, once the server has answered (before: ``None``)."""
        return self._attempts.run_id

    @property
    def conversation_id(self) -> str | None:
        """The conversation the answer goes into, once the server has answered."""
        return self._attempts.conversation_id

    @property
    def last_event_id(self) -> str:
        """The id of the last event delivered (``""`` before the first): where a resume would start."""
        return self._attempts.follower.last_id

    @property
    def done(self) -> bool:
        """Whether the done frame was delivered."""
        return self._attempts.follower.done


class AsyncRunStream(_Followed):
    """``async for event in stream``; ``await stream.cancel()`` stops the run, ``await stream.aclose()`` leaves it."""

    def __init__(
        self,
        attempts: core.Attempts,
        events: AsyncGenerator[StreamEvent, None],
        send: Callable[[core.Request], Awaitable[httpx.Response]],
    ) -> None:
        super().__init__(attempts)
        self._events = events
        self._send = send

    def __aiter__(self) -> AsyncRunStream:
        return self

    async def __anext__(self) -> StreamEvent:
        return await anext(self._events)

    async def __aenter__(self) -> AsyncRunStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the run is not cancelled (see the module's docstring)."""
        await self._events.aclose()

    async def cancel(self) -> bool:
        """Stop the run; ``False`` if it was not running (already over, or never started).

        Asked for while the chat's request is still unanswered, the cancel is sent as soon as the answer names the
        run, and ``True`` is returned: the iteration then sees the run's cancelled end.
        """
        if not self._attempts.started:
            try:
                await self._events.aclose()  # nothing was sent: the stream ends before it begins
                return False
            except RuntimeError:
                pass  # it is starting in another task right now: a cancel like any other
        request = self._attempts.cancel()
        return True if request is None else core.cancelled(await self._send(request))


class RunStream(_Followed):
    """The sync twin of :class:`AsyncRunStream`: ``for event in stream``, ``stream.cancel()``, ``stream.close()``.

    ``cancel()`` may be called from another thread while this one iterates (an ``httpx.Client`` is thread-safe).
    """

    def __init__(
        self,
        attempts: core.Attempts,
        events: Generator[StreamEvent, None, None],
        send: Callable[[core.Request], httpx.Response],
    ) -> None:
        super().__init__(attempts)
        self._events = events
        self._send = send

    def __iter__(self) -> RunStream:
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def __enter__(self) -> RunStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the run is not cancelled (see the module's docstring)."""
        self._events.close()

    def cancel(self) -> bool:
        """Stop the run; ``False`` if it was not running. See :meth:`AsyncRunStream.cancel`."""
        if not self._attempts.started:
            try:
                self._events.close()
                return False
            except ValueError:
                pass  # it is starting in another thread right now: a cancel like any other
        request = self._attempts.cancel()
        return True if request is None else core.cancelled(self._send(request))
