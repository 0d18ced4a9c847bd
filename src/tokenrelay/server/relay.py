"""The Relay: one backend, its runs, their store and the conversation history, with an explicit lifecycle."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from tokenrelay.backends.base import Backend, GenerateOptions, Message
from tokenrelay.history.base import History, MessageStatus, StoredMessage
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.metrics import RelayMetrics
from tokenrelay.protocols.aisdk import AISDKProtocol
from tokenrelay.protocols.base import Encoder, StreamContext, WireProtocol
from tokenrelay.protocols.openai_chat import OpenAIChatProtocol, model_id
from tokenrelay.protocols.seed import SeedProtocol
from tokenrelay.runs import HEARTBEAT, RunManager, RunOutcome, Subscription
from tokenrelay.server.auth import BearerTokenAuth, UserResolver, anonymous_or_claimed, load_tokens
from tokenrelay.server.settings import Settings
from tokenrelay.stores.base import RunInfo, RunStore, StoredEvent
from tokenrelay.stores.chat_runs import ChatRunIndex
from tokenrelay.stores.memory import MemoryRunStore

__all__ = ["EventStream", "Relay", "build_history", "build_store", "build_user_resolver"]


def build_store(settings: Settings) -> RunStore:
    """The run store the settings describe (Redis is imported only when chosen)."""
    if settings.store == "redis":
        from tokenrelay.stores.redis import RedisRunStore

        return RedisRunStore(
            settings.redis_url, prefix=settings.redis_prefix, ttl_s=settings.run_ttl_s, liveness_s=settings.liveness_s
        )
    return MemoryRunStore(ttl_s=settings.run_ttl_s)


def build_history(settings: Settings) -> History:
    """The history the settings describe (SQLAlchemy is imported only when chosen)."""
    if settings.history == "sql":
        from tokenrelay.history.sql import SQLHistory

        return SQLHistory(settings.database_url)
    return MemoryHistory()


def build_user_resolver(settings: Settings) -> UserResolver:
    """Bearer tokens when some are configured; otherwise the client's own ``user_id``, as in the seed."""
    tokens = load_tokens(settings.auth_tokens, settings.auth_tokens_file)
    return BearerTokenAuth(tokens) if tokens else anonymous_or_claimed


class EventStream:
    """A subscription encoded for the wire: the body of one SSE response.

    A class rather than an async generator so that ``aclose()`` releases the subscription even when the response
    never started iterating (a client that disconnects before the first byte still counts as leaving).
    """

    __slots__ = ("_encoder", "_opened", "_retry", "_subscription")

    def __init__(self, subscription: Subscription, encoder: Encoder, *, retry_ms: int = 0) -> None:
        self._subscription = subscription
        self._encoder = encoder
        self._opened = False
        # SSE "retry:" — how long a client should wait before reconnecting; EventSource honours it by itself.
        self._retry = b"retry: %d\n\n" % retry_ms if retry_ms else b""

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._opened:
            self._opened = True
            prelude = self._encoder.open()
            if prelude:
                return self._with_retry(prelude)
        item = await self._subscription.__anext__()
        if item is HEARTBEAT:
            chunk = self._encoder.heartbeat()
        else:
            assert isinstance(item, list)
            chunk = self._encoder.encode(item)
        return self._with_retry(chunk) if self._retry else chunk

    def _with_retry(self, chunk: bytes) -> bytes:
        # The hint rides on the first write rather than going out alone before anything happened: the first thing
        # a client receives is still the first event (or heartbeat).
        retry, self._retry = self._retry, b""
        return retry + chunk

    async def aclose(self) -> None:
        await self._subscription.aclose()


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
    ) -> None:
        self.settings = settings or Settings()
        self.backend = backend
        self.store: RunStore = store or build_store(self.settings)
        self.history: History = history or build_history(self.settings)
        self.resolve_user: UserResolver = resolve_user or build_user_resolver(self.settings)
        self.protocols: dict[str, WireProtocol] = {
            "seed": SeedProtocol(),
            "ai-sdk": AISDKProtocol(),
            "openai": OpenAIChatProtocol(model_id(backend.describe(), backend.name)),
        }
        # useChat's resume asks for a chat's stream, not a run's: the latest run started for each chat.
        # With a shared store the index is shared too (a useChat resume may reach any instance).
        self.chat_runs: ChatRunIndex = self.store.chat_run_index()
        self._stateless: set[str] = set()  # conversations that are not history (OpenAI's stateless API)
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
        )
        self.started_at = time.time()
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

        ``regenerate`` asks again instead of asking twice: when the last question is this same message, it is not
        stored a second time and the answers to it are left out of the model's context. The history keeps
        every answer (it is a log); the context only ever carries the latest answer to each question.
        """
        conversation_id = conversation_id or secrets.token_urlsafe(12)
        earlier = await self.history.load(user_id, conversation_id)
        store_question = True
        if regenerate:
            last_question = len(earlier)
            while last_question and earlier[last_question - 1].role == "assistant":
                last_question -= 1
            # Only when the last question is this one: a retry of a request that never reached the server must
            # not drop the answer before it.
            if (
                last_question
                and earlier[last_question - 1].role == "user"
                and earlier[last_question - 1].content == message
            ):
                earlier = earlier[: last_question - 1]
                store_question = False
        messages = _context(earlier)
        messages.append(Message("user", message))
        if store_question:
            await self.history.add(user_id, conversation_id, StoredMessage("user", message, created_at=time.time()))
        return await self.runs.start(messages, user_id=user_id, conversation_id=conversation_id, options=options)

    async def start_completion(
        self, messages: Sequence[Message], *, user_id: str, options: GenerateOptions | None = None
    ) -> RunInfo:
        """Start a run on exactly ``messages``, statelessly: the history is neither read nor written."""
        conversation_id = secrets.token_urlsafe(12)
        self._stateless.add(conversation_id)
        try:
            return await self.runs.start(messages, user_id=user_id, conversation_id=conversation_id, options=options)
        except BaseException:
            self._stateless.discard(conversation_id)
            raise

    async def stream(self, info: RunInfo, *, after: int = 0, protocol: str = "seed") -> EventStream:
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

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
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
        await self._save_answer(outcome)

    async def _save_answer(self, outcome: RunOutcome) -> None:
        if outcome.conversation_id in self._stateless:
            self._stateless.discard(outcome.conversation_id)
            return
        # Every ending is recorded, an empty one too: the conversation shows that the answer failed or was
        # stopped (empty messages are left out of the model's context).
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
                error_code=outcome.error.code if outcome.error is not None else None,
                output_tokens=outcome.usage.output_tokens if outcome.usage is not None else None,
            ),
        )


def _context(earlier: Sequence[StoredMessage]) -> list[Message]:
    """The turns a model sees: empty answers dropped, and of answers in a row (a regenerate) only the last."""
    out: list[Message] = []
    for m in earlier:
        if not m.content:
            continue
        if m.role == "assistant" and out and out[-1].role == "assistant":
            out[-1] = m.as_message()
        else:
            out.append(m.as_message())
    return out
