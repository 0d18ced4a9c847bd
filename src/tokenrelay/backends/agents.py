"""The seed's backend: an OpenAI Agents SDK agent, with tools from MCP servers over Streamable HTTP.

An ``Agent`` runs with ``Runner.run_streamed``. Text and reasoning come from the raw model deltas; ``tool_called``
and ``tool_output`` items become tool call events; a switch to another agent (a handoff) becomes a metadata
event. The model is OpenAI's by name, or any OpenAI-compatible server's through ``base_url``.

MCP connections live per run, not in a pool. An MCP client session runs an anyio task group that must be entered
and left by one task, and that task group may cancel its host when the transport fails: so each run gets a worker
task that owns its sessions from connect to cleanup and hands events over a queue, and a failing MCP server ends
that run only, with an error event, never a neighbour's. The price is one ``initialize`` and ``tools/list``
round trip per run, small beside a model call; in exchange nothing is shared to go stale (an MCP server restarted
between two runs is simply reconnected) and runs need no locking around a shared session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from tokenrelay.backends._errors import missing_extra, to_backend_error, upstream_errors
from tokenrelay.backends._openai import OpenAIConfig, incomplete_reason, public_url, response_text
from tokenrelay.backends._remote import RemoteBackend
from tokenrelay.backends._tools import agents_input
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.events import (
    Event,
    FinishEvent,
    FinishReason,
    MetadataEvent,
    ToolCallArgsDelta,
    ToolCallResult,
    ToolCallStart,
    UsageEvent,
)

if TYPE_CHECKING:
    from agents import Agent, Handoff, RunResultStreaming, Tool
    from agents.items import TResponseInputItem, TResponseStreamEvent
    from agents.mcp import MCPServer
    from agents.models.interface import Model
    from agents.stream_events import StreamEvent
    from openai import AsyncOpenAI

__all__ = ["AgentTranslator", "AgentsBackend", "parse_headers"]

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


class AgentTranslator:
    """Agents SDK stream events in, tokenrelay events out. Pure: no I/O, one instance per run."""

    def __init__(self, starting_agent: str) -> None:
        self.agent = starting_agent
        self.reason: FinishReason = "stop"

    def feed(self, event: StreamEvent) -> list[Event]:
        if event.type == "raw_response_event":
            return self._model_event(event.data)
        if event.type == "agent_updated_stream_event":
            name = event.new_agent.name
            if name == self.agent:
                return []  # the starting agent announcing itself: not a switch
            previous, self.agent = self.agent, name
            return [MetadataEvent({"agent": name, "previous_agent": previous})]
        if event.name == "tool_called":
            return _tool_called(event.item.raw_item)
        if event.name == "tool_output":
            output = getattr(event.item, "output", None)
            text = output if isinstance(output, str) else json.dumps(output, default=str)
            return [ToolCallResult(_call_id(event.item.raw_item), text)]
        return []

    def _model_event(self, data: TResponseStreamEvent) -> list[Event]:
        """One of the model's own stream events: text and reasoning deltas, and how the response ended."""
        said = response_text(data)
        if said is not None:
            return said
        if data.type == "response.completed":
            self.reason = "stop"
        elif data.type == "response.incomplete":
            self.reason = incomplete_reason(data.response)
        return []


def _tool_called(raw: Any) -> list[Event]:
    call_id = _call_id(raw)
    out: list[Event] = [ToolCallStart(call_id, _field(raw, "name") or _field(raw, "type") or "tool")]
    arguments = _field(raw, "arguments")
    if arguments:
        out.append(ToolCallArgsDelta(call_id, arguments))
    return out


def _call_id(raw: Any) -> str:
    return _field(raw, "call_id") or _field(raw, "id") or "call"


def _field(raw: Any, name: str) -> str | None:
    value = raw.get(name) if isinstance(raw, Mapping) else getattr(raw, name, None)
    return value if isinstance(value, str) and value else None


def _input(messages: Sequence[Message]) -> list[TResponseInputItem]:
    return agents_input(messages)


@dataclass(slots=True)
class _Work:
    """What the consumer and the worker of one run share."""

    emit: Callable[[object], None]
    result: RunResultStreaming | None = None
    stopping: bool = False


class AgentsBackend(RemoteBackend["AsyncOpenAI"]):
    """One ``Agent`` per run, with the configured model, instructions and MCP servers.

    From Python, ``tools`` (function tools) and ``handoffs`` (other agents) can be given too; a handoff shows in
    the stream as a metadata event ``{"agent": new, "previous_agent": old}``.
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
        instructions: str | None = None,
        agent_name: str = "Assistant",
        max_turns: int = 10,
        mcp_urls: Sequence[str] = (),
        mcp_headers: Mapping[str, str] | None = None,
        mcp_timeout_s: float = 10.0,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        cancel_timeout_s: float = 5.0,
        tools: Sequence[Tool] = (),
        handoffs: Sequence[Agent[Any] | Handoff[Any, Any]] = (),
    ) -> None:
        try:
            import agents  # noqa: F401
            import mcp  # noqa: F401
        except ImportError:
            raise missing_extra("agents", "agents", "openai-agents and mcp") from None
        super().__init__()
        self.config = OpenAIConfig(
            "agents", model=model, base_url=base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries
        )
        for url in mcp_urls:
            if not url.startswith(("http://", "https://")):
                raise BackendError("bad_config", f"--mcp-url takes http:// or https:// URLs, not {url!r}")
        self.openai_api = openai_api
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.instructions = instructions
        self.agent_name = agent_name
        self.max_turns = max_turns
        self.mcp_urls = list(mcp_urls)
        self.mcp_headers = dict(mcp_headers or {})
        self.mcp_timeout_s = mcp_timeout_s
        self.cancel_timeout_s = cancel_timeout_s
        self.tools = list(tools)
        self.handoffs = list(handoffs)
        # Traces go to OpenAI: only with an OpenAI key, or every run would log a failed export.
        self.tracing = self.config.has_openai_key
        self._model: Model | None = None

    def new_client(self) -> AsyncOpenAI:
        return self.config.client()

    async def close(self) -> None:
        self._model = None
        await super().close()

    def describe(self) -> dict[str, Any]:
        return {
            "api": self.openai_api,
            **self.config.describe(),
            "agent": self.agent_name,
            "mcp_servers": [public_url(url) for url in self.mcp_urls],
            "tracing": self.tracing,
            **self.stats.as_dict(),
        }

    def model(self) -> Model:
        if self._model is None:
            from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel

            client = self.client
            if self.openai_api == "responses":
                self._model = OpenAIResponsesModel(model=self.config.model, openai_client=client)
            else:
                self._model = OpenAIChatCompletionsModel(model=self.config.model, openai_client=client)
        return self._model

    def agent(self, servers: list[MCPServer], options: GenerateOptions) -> Agent[Any]:
        from agents import Agent, ModelSettings

        temperature = self.temperature if options.temperature is None else options.temperature
        # A handoff agent without a model of its own talks to the same server as this one.
        model = self.model()
        handoffs = [h.clone(model=model) if isinstance(h, Agent) and h.model is None else h for h in self.handoffs]
        return Agent(
            name=self.agent_name,
            instructions=self.instructions,
            model=model,
            model_settings=ModelSettings(temperature=temperature, max_tokens=options.max_tokens or self.max_tokens),
            mcp_servers=servers,
            tools=list(self.tools),
            handoffs=handoffs,
        )

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        work = _Work(emit=queue.put_nowait)
        worker = asyncio.create_task(self._run(list(messages), options, work), name="tokenrelay-agents-run")
        try:
            with self.stats.track():
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield cast(Event, item)
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

    async def _run(self, messages: list[Message], options: GenerateOptions, work: _Work) -> None:
        from agents import RunConfig, Runner

        try:
            async with contextlib.AsyncExitStack() as stack:
                servers = [await self._connect(stack, url) for url in self.mcp_urls]
                agent = self.agent(servers, options)
                translator = AgentTranslator(agent.name)
                result = Runner.run_streamed(
                    agent,
                    _input(messages),
                    max_turns=self.max_turns,
                    run_config=RunConfig(tracing_disabled=not self.tracing, workflow_name="tokenrelay"),
                )
                work.result = result
                with upstream_errors("agents"):
                    async for event in result.stream_events():
                        if not work.stopping:
                            for out in translator.feed(event):
                                work.emit(out)
                if not work.stopping:
                    usage = result.context_wrapper.usage
                    if usage.input_tokens or usage.output_tokens:
                        work.emit(UsageEvent(usage.input_tokens, usage.output_tokens))
                    work.emit(FinishEvent(translator.reason))
        except Exception as exc:
            work.emit(exc if isinstance(exc, BackendError) else to_backend_error(exc, "agents") or exc)
        finally:
            work.emit(_DONE)

    async def _connect(self, stack: contextlib.AsyncExitStack, url: str) -> MCPServer:
        from agents.mcp import MCPServerStreamableHttp

        server = MCPServerStreamableHttp(
            params={"url": url, "headers": self.mcp_headers, "timeout": self.mcp_timeout_s},
            name=public_url(url),
            cache_tools_list=True,
            client_session_timeout_seconds=self.mcp_timeout_s,
        )
        try:
            # The SDK's own timeouts cover each HTTP request; this covers the whole handshake (a silent host).
            async with asyncio.timeout(self.mcp_timeout_s):
                await stack.enter_async_context(server)
        except TimeoutError:
            raise BackendError(
                "mcp_unavailable",
                f"agents: MCP server {url} did not answer within {self.mcp_timeout_s:g}s",
                retryable=True,
            ) from None
        except Exception as exc:
            raise BackendError(
                "mcp_unavailable", f"agents: cannot connect to MCP server {url}: {_reason(exc)}", retryable=True
            ) from exc
        return server


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
