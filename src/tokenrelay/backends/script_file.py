"""Scripts from a JSON file, chosen by the user's message: ``tokenrelay serve --backend synthetic --synthetic-script``.

For tests that drive a real server from outside Python (the AI SDK compatibility suite) and need tool calls,
errors and pauses that the plain synthetic backend does not make. The file is either a list of steps (replayed for
every message) or an object from a user message to its steps, with ``"*"`` for any other message::

    {
      "weather?": [
        {"type": "tool-call-start", "call_id": "call_1", "name": "get_weather"},
        {"type": "tool-call-args-delta", "call_id": "call_1", "delta": "{\\"city\\": \\"Paris\\"}"},
        {"pause": 0.05},
        {"type": "tool-call-result", "call_id": "call_1", "output": "sunny"},
        {"type": "text-delta", "text": "It is sunny."}
      ],
      "fail": [{"type": "text-delta", "text": "Hm"}, {"error": {"code": "model_error", "message": "it broke"}}],
      "*": [{"type": "text-delta", "text": "Hello!"}, {"type": "finish", "reason": "stop"}]
    }

A step is an event as :func:`tokenrelay.events.event_to_dict` writes it, ``{"pause": seconds}``,
``{"error": {"code", "message", "retryable"?}}``, raised as a :class:`BackendError`, or ``{"approval": {"call_id",
"name", "arguments"?, "output"?, "record"?}}``: a tool call that waits for a person's approval (see
:class:`~tokenrelay.backends.scripted.Approval`; ``record`` is a file each approved call appends its id to).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends.base import ApprovalDecision, BackendError, GenerateOptions, Message, NoSetup, Suspend
from tokenrelay.backends.scripted import Approval, Pause, ScriptStep, play, resumed_steps
from tokenrelay.events import Event, event_from_dict

__all__ = ["ScriptFileBackend", "parse_steps"]

ANY = "*"


def parse_steps(raw: Any) -> list[ScriptStep]:
    """JSON steps → script steps; ``ValueError`` naming the bad step."""
    if not isinstance(raw, list):
        raise ValueError("a script must be a list of steps")
    steps: list[ScriptStep] = []
    for i, step in enumerate(raw):
        if not isinstance(step, dict):
            raise ValueError(f"step {i}: must be an object")
        if "pause" in step:
            seconds = step["pause"]
            if not isinstance(seconds, int | float) or seconds < 0:
                raise ValueError(f"step {i}: pause must be a number of seconds >= 0")
            steps.append(Pause(float(seconds)))
        elif "approval" in step:
            steps.append(_approval(step["approval"], i))
        elif "error" in step:
            error = step["error"]
            if not isinstance(error, dict) or not isinstance(error.get("message"), str):
                raise ValueError(f"step {i}: error must be an object with a message")
            code = str(error.get("code", "backend_error"))
            steps.append(BackendError(code, error["message"], retryable=bool(error.get("retryable", False))))
        else:
            try:
                steps.append(event_from_dict(step))
            except ValueError as exc:
                raise ValueError(f"step {i}: {exc}") from None
    return steps


def _approval(raw: Any, i: int) -> Approval:
    if not isinstance(raw, dict) or not isinstance(raw.get("call_id"), str) or not isinstance(raw.get("name"), str):
        raise ValueError(f"step {i}: approval must be an object with a call_id and a name")
    fields = {k: raw[k] for k in ("arguments", "output", "record") if k in raw}
    if not all(isinstance(v, str) for v in fields.values()):
        raise ValueError(f"step {i}: approval's arguments, output and record must be strings")
    return Approval(raw["call_id"], raw["name"], **fields)


class ScriptFileBackend(NoSetup):
    """Replays the script that the conversation's last user message selects."""

    name = "synthetic"

    def __init__(self, scripts: Mapping[str, Sequence[ScriptStep]]) -> None:
        self.scripts = {key: list(steps) for key, steps in scripts.items()}
        self.stats = StreamStats()

    @classmethod
    def from_file(cls, path: Path) -> ScriptFileBackend:
        """Load a script file; ``ValueError`` with the file's name when it is missing or malformed."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"script file {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"script file {path}: not valid JSON ({exc})") from None
        try:
            if isinstance(raw, dict):
                return cls({str(key): parse_steps(steps) for key, steps in raw.items()})
            return cls({ANY: parse_steps(raw)})
        except ValueError as exc:
            raise ValueError(f"script file {path}: {exc}") from None

    def describe(self) -> dict[str, Any]:
        return {"scripts": sorted(self.scripts), **self.stats.as_dict()}

    def _script(self, messages: Sequence[Message]) -> str:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "").strip()
        key = last if last in self.scripts else ANY
        if key not in self.scripts:
            raise BackendError("no_script", f"no script for the message {last[:80]!r}")
        return key

    async def stream(
        self, messages: Sequence[Message], options: GenerateOptions
    ) -> AsyncGenerator[Event | Suspend, None]:
        key = self._script(messages)
        with self.stats.track():
            async for item in play(self.scripts[key], 0, key):
                yield item

    async def resume(self, state: str, decisions: Sequence[ApprovalDecision]) -> AsyncGenerator[Event | Suspend, None]:
        key, at, results = resumed_steps(state, decisions)
        if key not in self.scripts:
            raise BackendError("bad_state", f"no script {key[:80]!r} to go on with")
        with self.stats.track():
            for event in results:
                yield event
            async for item in play(self.scripts[key], at, key):
                yield item
