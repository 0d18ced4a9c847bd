"""How the store lays runs out in Redis: key names, the run's meta hash, and events as stream entries.

``P`` is the key prefix; the ``{run_id}`` hash tag keeps a run's keys in one Redis Cluster slot, so the scripts
(``scripts.py``) are cluster-safe:

- ``P run:{id}:events`` — a Stream with one entry per event. The entry id is ``0-<seq>``: the store's sequence id
  *is* the stream id, so a resume after SSE id ``n`` is ``XREAD``/``XRANGE`` after ``0-n`` on every instance —
  exact, with no mapping to keep. The entry's one field ``e`` is the event as JSON (``events.event_to_dict``).
- ``P run:{id}:meta`` — a hash: user, conversation, backend, times, ``status``, ``last_seq``, ``owner`` (the
  instance that drives the run) and ``viewers`` (subscriptions on all instances).
- ``P instance:<iid>`` — the owner's liveness mark (``liveness.py``).
- ``P inbox:<iid>`` — the requests other instances send it (``inbox.py``).
- ``P wake:<iid>:<token>`` — a tail reader's wake-up stream (``tails.py``); on a cluster
  ``P wake:{<id>}:<iid>:<token>``, in the slot of the run ``<id>`` it is read with.
- ``P chat:…`` — useChat's chat → run index (``chat_runs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenrelay.events import Event, TextDelta, event_from_dict, event_to_dict
from tokenrelay.stores.base import RunInfo

__all__ = ["Keys", "decode", "dump_event", "entry_event", "event_of", "info_from_meta", "meta_of"]


@dataclass(frozen=True, slots=True)
class Keys:
    """The names of the keys one store uses, under its prefix (see the module's docstring for what each holds)."""

    prefix: str

    def meta(self, run_id: str) -> str:
        return f"{self.prefix}run:{{{run_id}}}:meta"

    def events(self, run_id: str) -> str:
        return f"{self.prefix}run:{{{run_id}}}:events"

    def instance(self, instance_id: str) -> str:
        return f"{self.prefix}instance:{instance_id}"

    def inbox(self, instance_id: str) -> str:
        return f"{self.prefix}inbox:{instance_id}"

    def wake(self, instance_id: str, token: str, tag: str | None = None) -> str:
        """``tag``: a run id, whose slot the wake-up stream then shares (on a cluster, it is read with that run)."""
        if tag is not None:
            return f"{self.prefix}wake:{{{tag}}}:{instance_id}:{token}"
        return f"{self.prefix}wake:{instance_id}:{token}"


def decode(value: Any) -> str:
    """A reply from Redis (bytes, or a number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def dump_event(event: Event) -> bytes:
    """An event as the JSON of its stream entry (a text delta, nearly every event, the short way: the same JSON)."""
    if type(event) is TextDelta:
        return orjson.dumps({"type": "text-delta", "text": event.text})
    return orjson.dumps(event_to_dict(event))


def entry_event(fields: dict[bytes, bytes]) -> Event:
    """The event a stream entry holds (the inverse of :func:`dump_event`)."""
    return event_of(fields[b"e"])


def event_of(raw: bytes) -> Event:
    """The event of a stream entry's JSON."""
    data = orjson.loads(raw)
    if data.get("type") == "text-delta" and len(data) == 2 and type(data.get("text")) is str:
        return TextDelta(data["text"])
    return event_from_dict(data)


def meta_of(info: RunInfo, owner: str) -> dict[Any, Any]:
    """A new run's meta hash: running, nothing appended yet, nobody watching, driven by ``owner``."""
    return {
        "user_id": info.user_id,
        "conversation_id": info.conversation_id,
        "backend": info.backend,
        "created_at": repr(info.created_at),
        "status": "running",
        "last_seq": 0,
        "owner": owner,
        "viewers": 0,
        "extra": orjson.dumps(info.extra).decode(),
    }


def info_from_meta(run_id: str, raw: dict[Any, Any]) -> tuple[RunInfo, str]:
    """A run's info and its owner's instance id, from its meta hash as ``HGETALL`` returns it."""
    meta = {decode(k): decode(v) for k, v in raw.items()}
    finished_at = meta.get("finished_at")
    info = RunInfo(
        run_id=run_id,
        user_id=meta.get("user_id", ""),
        conversation_id=meta.get("conversation_id", ""),
        backend=meta.get("backend", ""),
        created_at=float(meta.get("created_at", "0")),
        status="finished"
        if meta.get("status") == "finished"
        else "waiting"
        if meta.get("status") == "waiting"
        else "running",
        last_seq=int(meta.get("last_seq", "0")),
        finished_at=float(finished_at) if finished_at else None,
        extra=orjson.loads(meta.get("extra", "{}")),
    )
    return info, meta.get("owner", "")
