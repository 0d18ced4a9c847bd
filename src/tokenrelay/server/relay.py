"""The Relay: one backend, its runs, their store and the conversation history, with an explicit lifecycle."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tokenrelay.backends.base import Backend, GenerateOptions, Message
from tokenrelay.history.base import History, MessageStatus, StoredMessage
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.protocols.base import Encoder, StreamContext, WireProtocol
from tokenrelay.protocols.seed import SeedProtocol
from tokenrelay.runs import HEARTBEAT, RunManager, RunOutcome, Subscription
from tokenrelay.server.settings import Settings
from tokenrelay.stores.base import RunInfo, RunStore
from tokenrelay.stores.memory import MemoryRunStore

__all__ = ["EventStream", "Relay"]


class EventStream:
    """A subscription encoded for the wire: the body of one SSE response.

    A class rather than an async generator so that ``aclose()`` releases the subscription even when the response
    never started iterating (a client that disconnects before the first byte still counts as leaving).
    """

    __slots__ = ("_encoder", "_opened", "_subscription")

    def __init__(self, subscription: Subscription, encoder: Encoder) -> None:
        self._subscription = subscription
        self._encoder = encoder
        self._opened = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._opened:
            self._opened = True
            prelude = self._encoder.open()
            if prelude:
                return prelude
        item = await self._subscription.__anext__()
        if item is HEARTBEAT:
            return self._encoder.heartbeat()
        assert isinstance(item, list)
        return self._encoder.encode(item)

    async def aclose(self) -> None:
        await self._subscription.aclose()


class Relay:
    """Everything a tokenrelay server needs, usable inside any FastAPI app.

    ``async with relay.lifespan():`` starts the backend and, on the way out, cancels the runs still going (their
    partial answers are saved) and closes the stores.
    """

    def __init__(
        self,
        backend: Backend,
        settings: Settings | None = None,
        *,
        store: RunStore | None = None,
        history: History | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.backend = backend
        self.store: RunStore = store or MemoryRunStore(ttl_s=self.settings.run_ttl_s)
        self.history: History = history or MemoryHistory()
        self.protocols: dict[str, WireProtocol] = {"seed": SeedProtocol()}
        self.runs = RunManager(
            backend,
            self.store,
            heartbeat_s=self.settings.heartbeat_s,
            on_disconnect=self.settings.on_disconnect,
            detach_grace_s=self.settings.detach_grace_s,
            max_active_runs=self.settings.max_active_runs,
            coalesce_window_s=self.settings.coalesce_ms / 1000,
            on_finish=self._save_answer,
        )
        self.started_at = time.time()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Relay]:
        await self.backend.start()
        try:
            yield self
        finally:
            await self.runs.shutdown()
            await self.store.close()
            await self.history.close()
            await self.backend.close()

    async def start_chat(
        self,
        message: str,
        *,
        user_id: str,
        conversation_id: str | None,
        options: GenerateOptions | None = None,
    ) -> RunInfo:
        """Start a run that answers ``message`` in the conversation, with its earlier turns as context."""
        conversation_id = conversation_id or secrets.token_urlsafe(12)
        earlier = await self.history.load(user_id, conversation_id)
        messages = [m.as_message() for m in earlier if m.content]
        messages.append(Message("user", message))
        await self.history.add(user_id, conversation_id, StoredMessage("user", message, created_at=time.time()))
        return await self.runs.start(messages, user_id=user_id, conversation_id=conversation_id, options=options)

    async def stream(self, info: RunInfo, *, after: int = 0, protocol: str = "seed") -> EventStream:
        ctx = StreamContext(run_id=info.run_id, conversation_id=info.conversation_id, user_id=info.user_id)
        subscription = await self.runs.subscribe(info.run_id, after)
        return EventStream(subscription, self.protocols[protocol].encoder(ctx))

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "backend": self.backend.name,
            "active_runs": self.runs.active_runs,
            "subscribers": self.runs.subscribers,
            "uptime_s": round(time.time() - self.started_at, 3),
            "backend_info": self.backend.describe(),
        }

    async def _save_answer(self, outcome: RunOutcome) -> None:
        if outcome.reason == "error" and not outcome.text:
            return
        status: MessageStatus = (
            "cancelled" if outcome.reason == "cancelled" else "failed" if outcome.reason == "error" else "complete"
        )
        await self.history.add(
            outcome.user_id,
            outcome.conversation_id,
            StoredMessage(
                "assistant",
                outcome.text,
                status=status,
                run_id=outcome.run_id,
                created_at=time.time(),
            ),
        )
