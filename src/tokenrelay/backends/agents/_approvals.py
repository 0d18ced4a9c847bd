"""Tools that wait for a person's approval, and the suspended runs that wait with them.

Which tools need approval is a list of entries: a tool's name (a function tool's or an MCP tool's),
``mcp:<url>`` for every tool of that MCP server, or ``*`` for every tool. They map to the SDK's own switches: a
function tool's ``needs_approval``, an MCP server's ``require_approval``.

A run that stops at calls awaiting approval is saved as text: the SDK's ``RunState`` (its JSON), with the run's
options and the tokens counted so far (the resumed run reports only its own). Resuming restores that state on a
freshly built agent (the same MCP servers, reconnected, in the same order), approves or rejects each call, and
runs on. A rejected call's result, given to the model and shown to the viewers, is :func:`denial_text`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tokenrelay.backends.agents.translate import call_id_of
from tokenrelay.backends.base import ApprovalDecision, BackendError, GenerateOptions
from tokenrelay.events import ToolApprovalRequest

if TYPE_CHECKING:
    from agents import Tool
    from agents.items import ToolApprovalItem
    from agents.mcp.server import RequireApprovalSetting
    from agents.run_state import RunState

__all__ = ["ApprovalPolicy", "Saved", "approval_requests", "decide", "denial_text"]

_FORMAT = "tokenrelay.agents/1"


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The tools that need approval: by name, by MCP server (URL), or all of them."""

    tools: frozenset[str] = frozenset()
    servers: frozenset[str] = frozenset()
    everything: bool = False

    @classmethod
    def parse(cls, entries: Sequence[str]) -> ApprovalPolicy:
        tools: set[str] = set()
        servers: set[str] = set()
        everything = False
        for raw in entries:
            entry = raw.strip()
            if entry == "*":
                everything = True
            elif entry.startswith("mcp:") and entry[4:].strip():
                servers.add(entry[4:].strip())
            elif entry and not entry.startswith("mcp:"):
                tools.add(entry)
            else:
                raise BackendError(
                    "bad_config",
                    f"--approval-tools takes a tool name, mcp:<MCP server URL> or *, not {raw!r}",
                )
        return cls(frozenset(tools), frozenset(servers), everything)

    def __bool__(self) -> bool:
        return self.everything or bool(self.tools or self.servers)

    def function_tools(self, tools: Sequence[Tool]) -> list[Tool]:
        """``tools``, those that need approval marked so (a copy; the given tools are left as they are)."""
        from agents import FunctionTool

        return [
            dataclasses.replace(tool, needs_approval=True)
            if isinstance(tool, FunctionTool) and (self.everything or tool.name in self.tools)
            else tool
            for tool in tools
        ]

    def mcp_setting(self, *names: str) -> RequireApprovalSetting:
        """The ``require_approval`` of the MCP server known by ``names`` (its URL, its public name)."""
        if self.everything or any(name in self.servers for name in names):
            return "always"
        if self.tools:
            return {"always": {"tool_names": sorted(self.tools)}}
        return None


def approval_requests(interruptions: Sequence[Any]) -> list[ToolApprovalRequest]:
    """One request per call the run stopped at: its call id, tool name and arguments (JSON text)."""
    out: list[ToolApprovalRequest] = []
    for item in interruptions:
        raw = item.raw_item
        name = getattr(item, "tool_name", None) or _get(raw, "name") or "tool"
        arguments = _get(raw, "arguments")
        out.append(ToolApprovalRequest(call_id_of(raw), name, arguments if isinstance(arguments, str) else "{}"))
    return out


def denial_text(reason: str | None) -> str:
    text = "The user denied this tool call."
    return f"{text} Reason: {reason.strip()}" if reason and reason.strip() else text


def decide(state: RunState[Any, Any], decisions: Sequence[ApprovalDecision]) -> tuple[set[str], set[str]]:
    """Approve or reject every call ``state`` waits on; the pending call ids, and those denied.

    Every pending call needs one decision, and every decision a pending call: anything else is refused, before
    any of them is applied."""
    pending: dict[str, ToolApprovalItem] = {call_id_of(item.raw_item): item for item in state.get_interruptions()}
    given = {d.call_id: d for d in decisions}
    unknown = sorted(given.keys() - pending.keys())
    missing = sorted(pending.keys() - given.keys())
    if unknown or missing:
        what = f"no pending call {', '.join(unknown)}" if unknown else f"no decision for {', '.join(missing)}"
        raise BackendError("bad_request", f"agents: cannot resume: {what}")
    denied: set[str] = set()
    for call_id, item in pending.items():
        decision = given[call_id]
        if decision.approved:
            state.approve(item)
        else:
            state.reject(item, rejection_message=denial_text(decision.reason))
            denied.add(call_id)
    return set(pending), denied


@dataclass(frozen=True, slots=True)
class Saved:
    """A suspended run as text: the SDK's state, the run's options, and its token counts so far."""

    run_state: dict[str, Any]
    options: GenerateOptions
    usage: tuple[int, int] = (0, 0)

    def dumps(self) -> str:
        options = {"max_tokens": self.options.max_tokens, "temperature": self.options.temperature}
        return json.dumps(
            {"format": _FORMAT, "options": options, "usage": list(self.usage), "run_state": self.run_state},
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> Saved:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ValueError("not a suspended agents run")
            options = GenerateOptions(
                max_tokens=data["options"]["max_tokens"], temperature=data["options"]["temperature"]
            )
            usage_in, usage_out = (int(n) for n in data["usage"])
            return cls(dict(data["run_state"]), options, (usage_in, usage_out))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError("bad_request", f"agents: cannot resume: the saved state is unreadable ({exc})") from None


def _get(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)
