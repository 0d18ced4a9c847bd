"""What the endpoints of client libraries' own protocols share (the AI SDK's useChat, AG-UI's ``HttpAgent``): a
router bound to a relay, the request body as those clients send it (the whole transcript), the thread's new
question, its earlier messages taken as history when the server has none, and where a paused run goes on.

The client keeps a thread and sends all of it with every message; the server keeps the conversation too, so only
the last (user) message is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import BaseRoute

from tokenrelay.events import RunPaused
from tokenrelay.messages import Message
from tokenrelay.server.pipeline import (
    Binding,
    ProjectRoute,
    Refusal,
    authenticate,
    check_size,
    check_text,
    parse,
    read_json_object,
    stream_response,
)
from tokenrelay.server.relay import Relay

__all__ = ["TRANSCRIPT_FACTOR", "bound_router", "last_pause", "new_question", "read_thread", "start_thread_run"]

Model = TypeVar("Model", bound=BaseModel)

# These clients send the whole transcript with every message.
TRANSCRIPT_FACTOR = 64


def bound_router(
    binding: Binding, *, route_class: type[APIRoute] = ProjectRoute, streams: Sequence[BaseRoute] = ()
) -> APIRouter:
    """A router whose routes serve ``binding``'s relay (see :meth:`Binding.of`); ``streams`` (plain stream routes,
    :func:`~tokenrelay.server.pipeline.stream_route`) go first, ahead of the FastAPI routes added after."""
    router = APIRouter(route_class=route_class, dependencies=[Depends(binding)])
    router.routes.extend(streams)
    return router


async def read_thread(request: Request, relay: Relay, model: type[Model], user_id: str | None) -> Model:
    """The authenticated request's body as ``model``; a ``user_id`` from the query counts where the body has none."""
    await authenticate(request)
    data = await read_json_object(request, relay.settings.max_message_bytes * TRANSCRIPT_FACTOR)
    if user_id is not None and "user_id" not in data:
        data["user_id"] = user_id
    return parse(model, data)


def new_question(role: str, text: str, limit: int) -> str:
    """The thread's new question: the text of its last message (``role``, ``text``), which must be the user's."""
    if role != "user":
        raise Refusal(422, "invalid_request", "messages: the last message must be the user's", field="messages")
    if not text.strip():
        raise Refusal(422, "invalid_request", "messages: the last message has no text", field="messages")
    check_size(text, limit, "messages")
    check_text(text, "messages")
    return text


async def start_thread_run(
    relay: Relay,
    user: str,
    thread_id: str,
    question: str,
    earlier: list[Message],
    *,
    protocol: str,
    regenerate: bool = False,
) -> Response:
    """Answer ``question`` in the thread, ``earlier`` becoming its history if the server has none yet, and stream
    the run in ``protocol``; the run becomes the thread's current one."""
    for i, m in enumerate(earlier):
        check_text(m.content, f"messages.{i}")
    await relay.conversations.adopt(user, thread_id, earlier)
    info = await relay.start_chat(question, user_id=user, conversation_id=thread_id, regenerate=regenerate)
    await relay.chat_runs.set(user, thread_id, info.run_id)
    return await stream_response(relay, info, after=0, protocol=protocol)


async def last_pause(relay: Relay, run_id: str) -> int | None:
    """The id of the run's last pause (what its continuation comes after), or ``None`` if it never paused."""
    last: int | None = None
    cursor = 0
    while batch := await relay.store.read(run_id, cursor, 0):
        last = next((item.seq for item in reversed(batch) if type(item.event) is RunPaused), last)
        cursor = batch[-1].seq
    return last
