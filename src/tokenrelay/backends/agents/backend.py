"""The agents backend: one ``Agent`` per run (see the package's docstring), started or resumed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tokenrelay._extras import require
from tokenrelay.backends._errors import to_backend_error, upstream_errors
from tokenrelay.backends._openai import OpenAIConfig, public_url
from tokenrelay.backends._remote import RemoteBackend
from tokenrelay.backends._tools import agents_input
from tokenrelay.backends.agents._approvals import ApprovalPolicy, Saved, approval_requests, decide
from tokenrelay.backends.agents._model import FinishNotes, make_model
from tokenrelay.backends.agents._settings import AgentOptions, model_settings
from tokenrelay.backends.agents.translate import STRUCTURED, AgentTranslator
from tokenrelay.backends.base import ApprovalDecision, BackendError, GenerateOptions, Message, Suspend
from tokenrelay.events import Event, FinishEvent, UsageEvent

if TYPE_CHECKING:
    from agents import Agent, Handoff, RunResultStreaming, Tool
    from agents.items import TResponseInputItem
    from agents.mcp import MCPServer, MCPToolCustomDataContext
    from agents.run_state import RunState
    from openai import AsyncOpenAI

__all__ = ["AgentsBackend", "parse_headers"]

log = logging.getLogger("tokenrelay.backends.agents")

_DONE = object()


def parse_headers(lines: Sequence[str]) -> dict[str, str]:
    """``["Authorization: Bearer x"]`` → ``{"Authorization": "Bearer x"}``; a line without a colon is an error."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BackendError("bad_config", f"--mcp-header expects 'Name: value', got {line!r}")
        headers[name.strip()] = value.strip()
    return headers


@dataclass(slots=True)
class _Work:
    """What the consumer and the worker of one run share."""

    emit: Callable[[object], None]
    result: RunResultStreaming | None = None
    stopping: bool = False


@dataclass(slots=True)
class _Start:
    """Where a run starts: a conversation, or a suspended run (its saved text) and the decisions it waited for."""

    options: GenerateOptions
    messages: list[Message] = field(default_factory=list)
    saved: Saved | None = None
    decisions: Sequence[ApprovalDecision] = ()


class AgentsBackend(RemoteBackend["AsyncOpenAI"]):
    """One ``Agent`` per run, with the configured model, instructions, settings and MCP servers.

    From Python, ``tools`` (function tools) and ``handoffs`` (other agents) can be given too; a handoff shows in
    the stream as a metadata event ``{"agent": new, "previous_agent": old}``. ``approval_tools`` names the tools
    that wait for a person's approval (see ``_approvals``): the run then ends with a :class:`Suspend`, and
    :meth:`resume` goes on from it.
    """

    name = "agents"

    def __init__(
        self,
        *,
        model: str | None,
        base_url: str | None = None,
        api_key: str | None = None,
        openai_api: Literal["chat", "responses"] = "chat",
        max_tokens: int | None = None,
        temperature: float | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        extra_model_settings: Mapping[str, Any] | None = None,
        instructions: str | None = None,
        agent_name: str = "Assistant",
        max_turns: int = 10,
        mcp_urls: Sequence[str] = (),
        mcp_headers: Mapping[str, str] | None = None,
        mcp_timeout_s: float = 10.0,
        approval_tools: Sequence[str] = (),
        timeout_s: float = 60.0,
        max_retries: int = 2,
        cancel_timeout_s: float = 5.0,
        tools: Sequence[Tool] = (),
        handoffs: Sequence[Agent[Any] | Handoff[Any, Any]] = (),
    ) -> None:
        require("mcp", "the agents backend", extra="agents")  # first: openai-agents itself imports it
        require("agents", "the agents backend", extra="agents", package="openai-agents")
        super().__init__()
        self.config = OpenAIConfig(
            "agents", model=model, base_url=base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries
        )
        for url in mcp_urls:
            if not url.startswith(("http://", "https://")):
                raise BackendError("bad_config", f"--mcp-url takes http:// or https:// URLs, not {url!r}")
        self.openai_api = openai_api
        self.settings = AgentOptions(max_tokens, temperature, tool_choice, parallel_tool_calls, extra_model_settings)
        model_settings(self.settings, GenerateOptions())  # a bad setting fails here, not in the first run
        self.instructions = instructions
        self.agent_name = agent_name
        self.max_turns = max_turns
        self.mcp_urls = list(mcp_urls)
        self.mcp_headers = dict(mcp_headers or {})
        self.mcp_timeout_s = mcp_timeout_s
        self.cancel_timeout_s = cancel_timeout_s
        self.approvals = ApprovalPolicy.parse(approval_tools)
        self.tools = self.approvals.function_tools(tools)
        self.handoffs = list(handoffs)
        # Traces go to OpenAI: only with an OpenAI key, or every run would log a failed export.
        self.tracing = self.config.has_openai_key

    @property
    def max_tokens(self) -> int | None:
        return self.settings.max_tokens

    @property
    def temperature(self) -> float | None:
        return self.settings.temperature

    def new_client(self) -> AsyncOpenAI:
        # The SDK parses the stream into its models (the Runner needs them), over the lean transport all the same.
        return self.config.client(lean=True)

    def describe(self) -> dict[str, Any]:
        return {
            "api": self.openai_api,
            **self.config.describe(),
            "agent": self.agent_name,
            "mcp_servers": [public_url(url) for url in self.mcp_urls],
            "approval_tools": bool(self.approvals),
            "tracing": self.tracing,
            **self.stats.as_dict(),
        }

    def agent(self, servers: list[MCPServer], options: GenerateOptions, notes: FinishNotes) -> Agent[Any]:
        from agents import Agent

        # A handoff agent without a model of its own talks to the same server as this one.
        model = make_model(self.openai_api, str(self.config.model), self.client, notes)
        handoffs = [h.clone(model=model) if isinstance(h, Agent) and h.model is None else h for h in self.handoffs]
        return Agent(
            name=self.agent_name,
            instructions=self.instructions,
            model=model,
            model_settings=model_settings(self.settings, options),
            mcp_servers=servers,
            tools=list(self.tools),
            handoffs=handoffs,
        )

    def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event | Suspend, None]:
        return self._stream(_Start(options, messages=list(messages)))

    def resume(self, state: str, decisions: Sequence[ApprovalDecision]) -> AsyncGenerator[Event | Suspend, None]:
        """Go on with a run that ended with a :class:`Suspend`: approved calls run, denied ones are refused."""
        saved = Saved.loads(state)
        return self._stream(_Start(saved.options, saved=saved, decisions=list(decisions)))

    async def _stream(self, start: _Start) -> AsyncGenerator[Event | Suspend, None]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        work = _Work(emit=queue.put_nowait)
        parent = asyncio.current_task()
        name = f"{parent.get_name()}/agents" if parent is not None else "tokenrelay-agents-run"
        worker = asyncio.create_task(self._run(start, work), name=name)
        try:
            with self.stats.track():
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield item  # type: ignore[misc]
        finally:
            await self._stop(worker, work)

    async def _stop(self, worker: asyncio.Task[None], work: _Work) -> None:
        """Stop the run the SDK's way and wait until it is done: its model call closed, its MCP sessions left."""
        if not worker.done():
            work.stopping = True
            if work.result is not None:
                # Cancels the SDK's run loop (which closes the model's HTTP response) and ends stream_events;
                # the worker keeps draining it until the SDK has settled, then leaves the MCP sessions.
                work.result.cancel()
            else:
                worker.cancel()  # still connecting to the MCP servers
            try:
                done, _ = await asyncio.wait({worker}, timeout=self.cancel_timeout_s)
                if not done:
                    log.warning("agents run did not stop within %.1fs; cancelling its task", self.cancel_timeout_s)
                    worker.cancel()
                    await asyncio.wait({worker}, timeout=1.0)
            except asyncio.CancelledError:
                worker.cancel()
                raise
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            log.error("agents worker failed", exc_info=worker.exception())

    async def _run(self, start: _Start, work: _Work) -> None:
        from agents import RunConfig, Runner

        try:
            async with contextlib.AsyncExitStack() as stack:
                servers = [await self._connect(stack, url) for url in self.mcp_urls]
                notes = FinishNotes()
                agent = self.agent(servers, start.options, notes)
                run_input, translator = await self._begin(agent, start)
                result = Runner.run_streamed(
                    agent,
                    run_input,
                    max_turns=self.max_turns,
                    run_config=RunConfig(tracing_disabled=not self.tracing, workflow_name="tokenrelay"),
                )
                work.result = result
                cut = await _pump(result, translator, work)
                if cut is not None and not work.stopping:
                    if cut[0] or cut[1]:
                        work.emit(UsageEvent(cut[0], cut[1]))
                    work.emit(FinishEvent(translator.reason))
                elif not work.stopping:
                    self._end(result, translator, notes, start, work)
        except Exception as exc:
            work.emit(exc if isinstance(exc, BackendError) else to_backend_error(exc, "agents") or exc)
        finally:
            work.emit(_DONE)

    async def _begin(
        self, agent: Agent[Any], start: _Start
    ) -> tuple[list[TResponseInputItem] | RunState[Any, Any], AgentTranslator]:
        """The run's input (the conversation, or the restored state with its decisions applied) and translator."""
        handoffs = {_handoff_name(h) for h in agent.handoffs}
        if start.saved is None:
            return agents_input(start.messages), AgentTranslator(agent.name, handoffs=handoffs)
        from agents.run_state import RunState

        try:
            state = await RunState.from_json(agent, start.saved.run_state)
        except Exception as exc:
            log.warning("agents: a saved run could not be restored: %s", exc, exc_info=True)
            raise BackendError("bad_request", "agents: cannot resume: the saved run does not fit this agent") from None
        pending, denied = decide(state, start.decisions)
        return state, AgentTranslator(agent.name, handoffs=handoffs, started=pending, denied=denied)

    def _end(
        self, result: RunResultStreaming, translator: AgentTranslator, notes: FinishNotes, start: _Start, work: _Work
    ) -> None:
        """Usage (this segment's), then the finish, or the approval requests and the suspension."""
        usage = result.context_wrapper.usage
        before = start.saved.usage if start.saved is not None else (0, 0)
        spent = (usage.input_tokens - before[0], usage.output_tokens - before[1])
        if spent[0] or spent[1]:
            work.emit(UsageEvent(spent[0], spent[1]))
        if result.interruptions:
            for request in approval_requests(result.interruptions):
                work.emit(request)
            saved = Saved(result.to_state().to_json(), start.options, (usage.input_tokens, usage.output_tokens))
            work.emit(Suspend(saved.dumps()))
            return
        reason = translator.reason
        # A Chat Completions stream's own finish reason says what the SDK's "completed" does not (e.g. length).
        work.emit(FinishEvent((notes.last or reason) if reason == "stop" else reason))

    async def _connect(self, stack: contextlib.AsyncExitStack, url: str) -> MCPServer:
        from agents.mcp import MCPServerStreamableHttp

        name = public_url(url)
        server = MCPServerStreamableHttp(
            params={"url": url, "headers": self.mcp_headers, "timeout": self.mcp_timeout_s},
            name=name,
            cache_tools_list=True,
            client_session_timeout_seconds=self.mcp_timeout_s,
            require_approval=self.approvals.mcp_setting(url, name),
            custom_data_extractor=_structured_content,
        )
        try:
            # The SDK's own timeouts cover each HTTP request; this covers the whole handshake (a silent host).
            async with asyncio.timeout(self.mcp_timeout_s):
                await stack.enter_async_context(server)
        except TimeoutError:
            raise BackendError(
                "mcp_unavailable",
                f"agents: MCP server {name} did not answer within {self.mcp_timeout_s:g}s",
                retryable=True,
            ) from None
        except Exception as exc:
            log.warning("agents: cannot connect to MCP server %s: %s", url, _reason(exc))
            raise BackendError(
                "mcp_unavailable", f"agents: cannot connect to MCP server {name}", retryable=True
            ) from exc
        return server


async def _pump(result: RunResultStreaming, translator: AgentTranslator, work: _Work) -> tuple[int, int] | None:
    """The SDK's events, translated, to the consumer; the tokens of the last response if it stopped short."""
    from agents import ModelBehaviorError

    with upstream_errors("agents"):
        try:
            async for event in result.stream_events():
                if not work.stopping:
                    for out in translator.feed(event):
                        work.emit(out)
        except ModelBehaviorError:
            # The SDK ends a Responses answer cut at its token limit with an error; the answer so far stands.
            if translator.cut is None:
                raise
            return translator.cut
    return None


def _structured_content(context: MCPToolCustomDataContext) -> dict[str, Any] | None:
    """Keeps an MCP tool's structured content with its output (the translator shows it)."""
    structured = context.structured_content
    return {STRUCTURED: dict(structured)} if structured is not None and not context.is_error else None


def _handoff_name(handoff: Any) -> str:
    from agents import Handoff

    return handoff.tool_name if isinstance(handoff, Handoff) else Handoff.default_tool_name(handoff)


def _reason(exc: BaseException) -> str:
    """The innermost useful message of an exception, its causes and exception groups."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
            continue
        cause = exc.__cause__
        if cause is not None and not str(exc):
            exc = cause
            continue
        text = str(exc) or type(exc).__name__
        if cause is not None and str(cause) and str(cause) not in text:
            text += f" ({cause})"
        return text
