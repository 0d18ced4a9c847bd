"""The Relay: the composition root of a tokenrelay server.

One backend, the runs that drive it, their store, the conversations and the wire protocols, put together once and
handed to the routes. What a conversation is lives in :mod:`tokenrelay.history.conversation`; how a run becomes
bytes, in :mod:`~tokenrelay.server.event_stream`; what the settings build, in :mod:`~tokenrelay.server.factory`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from tokenrelay.backends.base import Backend, GenerateOptions, Message
from tokenrelay.errors import StoreUnavailable
from tokenrelay.history.base import History
from tokenrelay.history.conversation import STATELESS, Conversations
from tokenrelay.metrics import RelayMetrics
from tokenrelay.observability import build_observer
from tokenrelay.protocols.agui import AGUIProtocol
from tokenrelay.protocols.aisdk import AISDKProtocol
from tokenrelay.protocols.base import Encoder, StreamContext, WireProtocol
from tokenrelay.protocols.openai_chat import OpenAIChatProtocol, model_id
from tokenrelay.protocols.seed import SeedProtocol
from tokenrelay.runs import RunManager, RunOutcome
from tokenrelay.runs.base import new_id
from tokenrelay.runs.observer import RunObserver
from tokenrelay.server.auth import UserResolver
from tokenrelay.server.event_stream import EventStream
from tokenrelay.server.factory import build_history, build_store, build_user_resolver
from tokenrelay.server.settings import Settings
from tokenrelay.stores.base import RunInfo, RunStore, StoredEvent
from tokenrelay.stores.chat_runs import ChatRunIndex

__all__ = ["Relay"]


class Relay:
    """Everything a tokenrelay server needs, usable inside any FastAPI app.

    ``async with relay.lifespan():`` connects the run store and the history (migrating its schema), starts the
    backend and, on the way out, cancels the runs still going (their partial answers are saved) and closes them.
    Pass ``store``, ``history`` or ``resolve_user`` to use your own instead of the ones the settings describe.
    """

    def __init__(
        self,
        backend: Backend,
        settings: Settings | None = None,
        *,
        store: RunStore | None = None,
        history: History | None = None,
        resolve_user: UserResolver | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        self.settings = settings or Settings()
        # What watches each run (a log line as it ends; with settings.otel, a span), unless given one.
        default_observer, self.tracing = build_observer(backend, otel=self.settings.otel)
        self.backend = backend
        self.store: RunStore = store or build_store(self.settings)
        self.history: History = history or build_history(self.settings)
        self.conversations = Conversations(self.history)
        self.resolve_user: UserResolver = resolve_user or build_user_resolver(self.settings)
        self.protocols: dict[str, WireProtocol] = {
            "seed": SeedProtocol(),
            "ai-sdk": AISDKProtocol(),
            "openai": OpenAIChatProtocol(model_id(backend.describe(), backend.name)),
            "ag-ui": AGUIProtocol(),
        }
        # useChat's resume asks for a chat's stream, not a run's: the latest run started for each chat.
        # With a shared store the index is shared too (a useChat resume may reach any instance).
        self.chat_runs: ChatRunIndex = self.store.chat_run_index()
        self.runs = RunManager(
            backend,
            self.store,
            heartbeat_s=self.settings.heartbeat_s,
            on_disconnect=self.settings.on_disconnect,
            detach_grace_s=self.settings.detach_grace_s,
            max_active_runs=self.settings.max_active_runs,
            coalesce_window_s=self.settings.coalesce_ms / 1000,
            coalesce_max_s=self.settings.coalesce_max_ms / 1000,
            on_finish=self._run_finished,
            approval_expiry_s=self.settings.approval_expiry_s,
            observer=observer or default_observer,
        )
        self.started_at = time.time()
        # Which instance answered (the Redis store's own id, by which the instances sharing it know each other).
        self.instance_id: str = getattr(self.store, "instance_id", None) or secrets.token_hex(8)
        self.metrics = RelayMetrics(self.runs)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Relay]:
        await self.store.start()
        try:
            await self.history.start()
            try:
                await self.backend.start()
                try:
                    yield self
                finally:
                    await self.runs.shutdown()
                    await self.backend.close()
            finally:
                await self.history.close()
        finally:
            await self.store.close()

    def enter_request(self, headers: Mapping[str, str]) -> None:
        """With tracing on, make the request's ``traceparent`` the parent of the runs it starts (when the host's
        instrumentation has not already put a span in place). Every route's router calls it."""
        if self.tracing is not None:
            self.tracing.enter_request(headers)

    async def start_chat(
        self,
        message: str,
        *,
        user_id: str,
        conversation_id: str | None,
        options: GenerateOptions | None = None,
        regenerate: bool = False,
    ) -> RunInfo:
        """Start a run that answers ``message`` in the conversation, with its earlier turns as context.

        ``regenerate`` asks the last question again instead of asking it twice (see
        :meth:`~tokenrelay.history.conversation.Conversations.ask`).
        """
        new = conversation_id is None  # an id made up here: nothing to load
        conversation_id = conversation_id or new_id(12)
        # The store must answer before the question is written: a run the store cannot take would leave the question
        # in the history without its answer. The history is not asked separately: its load, or after a failed write
        # the question's write itself, is its check (StoreUnavailable, a 503 with Retry-After, nothing written).
        # Otherwise the question's write goes on while the run starts, and the answer is saved after it.
        await self.store.check()
        messages = await self.conversations.ask(user_id, conversation_id, message, regenerate=regenerate, new=new)
        # The run starts now. With a shared store another instance may end the run and save its answer (this one died):
        # its first event is then stored once the question is, so that an answer anyone has seen has its question.
        # With one instance the run and its save live here, after the question's write: nothing to wait for.
        written = self.conversations.pending(user_id, conversation_id) if self.store.shared else None
        return await self.runs.start(
            messages, user_id=user_id, conversation_id=conversation_id, options=options, after=written
        )

    async def start_completion(
        self, messages: Sequence[Message], *, user_id: str, options: GenerateOptions | None = None
    ) -> RunInfo:
        """Start a run on exactly ``messages``, statelessly: the history is neither read nor written."""
        await self.store.check()  # StoreUnavailable (a 503) rather than the store client's own error
        # Marked on the run itself, not remembered here: the instance that records the run's end may be another.
        return await self.runs.start(
            messages, user_id=user_id, conversation_id=new_id(12), options=options, extra=dict(STATELESS)
        )

    async def stream(self, info: RunInfo, *, after: int = 0, protocol: str = "seed") -> EventStream:
        """The run's events after ``after``, encoded in ``protocol`` (a name in :attr:`protocols`)."""
        ctx = StreamContext(run_id=info.run_id, conversation_id=info.conversation_id, user_id=info.user_id)
        encoder = self.protocols[protocol].encoder(ctx)
        return await self.follow(info, encoder, after=after)

    async def follow(self, info: RunInfo, encoder: Encoder, *, after: int = 0) -> EventStream:
        """Subscribe ``encoder`` to a run from ``after``, primed first with the events the client already has."""
        if after > 0:
            encoder.prime(await self._events_through(info.run_id, after))
        subscription = await self.runs.subscribe(info.run_id, after)
        # An encoder may refuse the "retry:" hint: OpenAI's clients take that lone field for an empty event.
        retry_ms = self.settings.retry_ms if encoder.sse_retry else 0
        return EventStream(subscription, encoder, retry_ms=retry_ms)

    async def _events_through(self, run_id: str, last: int) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        cursor = 0
        while cursor < last:
            batch = await self.store.read(run_id, cursor, 0)
            if not batch:
                break
            out.extend(item for item in batch if item.seq <= last)
            cursor = batch[-1].seq
        return out

    async def check_health(self) -> dict[str, Any]:
        """:meth:`health`, with each dependency asked whether it answers: ``status`` is ``unavailable`` (and
        ``dependencies`` says which) while one does not; it recovers by itself when the dependency is back."""
        report = self.health()
        dependencies: dict[str, str] = {}
        for name, check in (("store", self.store.check), ("history", self.history.check)):
            try:
                await check()
            except StoreUnavailable as exc:
                dependencies[name] = exc.message
            else:
                dependencies[name] = "ok"
        report["dependencies"] = dependencies
        if any(state != "ok" for state in dependencies.values()):
            report["status"] = "unavailable"
        return report

    def health(self) -> dict[str, Any]:
        """Liveness and load, without asking the dependencies (see :meth:`check_health`)."""
        return {
            "status": "ok",
            "instance": self.instance_id,
            "backend": self.backend.name,
            "active_runs": self.runs.active_runs,
            "subscribers": self.runs.subscribers,
            "uptime_s": round(time.time() - self.started_at, 3),
            "backend_info": self.backend.describe(),
        }

    async def _run_finished(self, outcome: RunOutcome) -> None:
        info = await self.store.get(outcome.run_id)
        if info is not None:
            self.metrics.run_finished(outcome, info.created_at)
        await self.conversations.save_answer(outcome)
