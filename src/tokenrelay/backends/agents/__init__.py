"""The seed's backend: an OpenAI Agents SDK agent, with tools from MCP servers over Streamable HTTP.

An ``Agent`` runs with ``Runner.run_streamed``. Text, reasoning and tool calls stream from the model's own events
(a call's start and its argument fragments as the model writes them, ``translate``); a tool's output becomes a
tool result with its text; a switch to another agent (a handoff) becomes a metadata event. The model is OpenAI's
by name, or any OpenAI-compatible server's through ``base_url``, with the settings of ``_settings``.

MCP connections live per run, not in a pool. An MCP client session runs an anyio task group that must be entered
and left by one task, and that task group may cancel its host when the transport fails: so each run gets a worker
task that owns its sessions from connect to cleanup and hands events over a queue, and a failing MCP server ends
that run only, with an error event, never a neighbour's. The price is one ``initialize`` and ``tools/list``
round trip per run, small beside a model call; in exchange nothing is shared to go stale (an MCP server restarted
between two runs is simply reconnected) and runs need no locking around a shared session.

Tools named as needing approval stop the run at their call: it ends with a ``ToolApprovalRequest`` per call and a
``Suspend`` holding the saved run, and :meth:`AgentsBackend.resume` goes on from that text once every call is
answered, in any process (``_approvals``).
"""

from tokenrelay.backends.agents.backend import AgentsBackend, parse_headers
from tokenrelay.backends.agents.translate import AgentTranslator

__all__ = ["AgentTranslator", "AgentsBackend", "parse_headers"]
