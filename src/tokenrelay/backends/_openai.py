"""What the OpenAI-speaking backends share: configuration checks, the client, the finish-reason vocabulary and the
reading of the Responses stream's text."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tokenrelay._extras import require
from tokenrelay.backends._errors import refused_requests_are_final
from tokenrelay.backends._remote import TranslatingBackend
from tokenrelay.backends._tools import text_turns
from tokenrelay.backends._wire import shared_text
from tokenrelay.backends.base import BackendError, Message
from tokenrelay.events import Event, FinishReason, ReasoningDelta, TextDelta

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

__all__ = [
    "OpenAIBackendBase",
    "OpenAIConfig",
    "OpenAIOptions",
    "chat_messages",
    "finish_reason",
    "incomplete_reason",
    "public_url",
    "response_text",
    "wire_incomplete_reason",
    "wire_response_text",
]

_Item = TypeVar("_Item")

# Servers that need no key (llama.cpp, Ollama, vLLM without --api-key) still get one: the SDK insists on it.
_NO_KEY = "not-needed"


class OpenAIConfig:
    """Where and how to reach an OpenAI-compatible server; checked when the backend is built.

    Without ``base_url`` the server is OpenAI itself, which needs a key (``api_key`` or ``OPENAI_API_KEY``).
    ``backend`` names the backend (and its extra) in the errors.
    """

    def __init__(
        self,
        backend: str,
        *,
        model: str | None,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
    ) -> None:
        require("openai", f"the {backend} backend", extra=backend)
        if not model:
            raise BackendError("bad_config", f"--backend {backend} needs a model name: --model NAME")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise BackendError("bad_config", f"--base-url must be an http:// or https:// URL, not {base_url!r}")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if base_url is None and not key:
            raise BackendError(
                "bad_config",
                f"--backend {backend} without --base-url talks to OpenAI, which needs --api-key KEY "
                "(or OPENAI_API_KEY); for another OpenAI-compatible server pass --base-url URL",
            )
        self.model = model
        self.base_url = base_url
        self.api_key = key or _NO_KEY
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.has_openai_key = base_url is None or bool(os.environ.get("OPENAI_API_KEY"))

    @property
    def talks_to_openai(self) -> bool:
        return self.base_url is None

    def client(self, *, lean: bool = False, transport: Any = None) -> AsyncOpenAI:
        """The SDK's client; with ``lean`` on the lean HTTP transport (``_http.py``) that the fast path reads, or on
        the given ``transport`` (the warm-up's)."""
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        # The SDK retries every 5xx; one that reports a validation failure is not sent again.
        hooks = {"response": [refused_requests_are_final]}
        if transport is not None:
            http = DefaultAsyncHttpxClient(transport=transport, event_hooks=hooks)
        elif lean:
            from tokenrelay.backends._http import lean_client

            http = lean_client(DefaultAsyncHttpxClient, event_hooks=hooks)
        else:
            http = DefaultAsyncHttpxClient(event_hooks=hooks)
        return AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            http_client=http,
        )

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": public_url(self.base_url or "https://api.openai.com/v1")}


def public_url(url: str) -> str:
    """``url`` fit for ``/api/health``: without credentials or a query string, where tokens hide."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def chat_messages(system_prompt: str | None, messages: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation as Chat Completions messages, the system prompt first (a tool's output as user text)."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + text_turns(messages)


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(value: str | None) -> FinishReason:
    return _FINISH.get(value or "stop", "stop")


def response_text(event: ResponseStreamEvent) -> list[Event] | None:
    """The answer's or the reasoning's text that a Responses stream event carries (``[]`` for an empty delta), or
    ``None`` when the event is of another kind."""
    if event.type == "response.output_text.delta" or event.type == "response.refusal.delta":
        return [TextDelta(event.delta)] if event.delta else []
    if event.type == "response.reasoning_summary_text.delta" or event.type == "response.reasoning_text.delta":
        return [ReasoningDelta(event.delta)] if event.delta else []
    return None


def incomplete_reason(response: Response) -> FinishReason:
    """Why a Responses answer stopped short: its content filter, or else its length limit."""
    details = response.incomplete_details
    return "content_filter" if details and details.reason == "content_filter" else "length"


_TEXT_EVENTS: dict[Any, Callable[[str], Event]] = {
    "response.output_text.delta": TextDelta,
    "response.refusal.delta": TextDelta,
    "response.reasoning_summary_text.delta": ReasoningDelta,
    "response.reasoning_text.delta": ReasoningDelta,
}


def wire_response_text(event: dict[str, Any]) -> list[Event] | None:
    """:func:`response_text` for the fast path, over the event's JSON data."""
    kind = _TEXT_EVENTS.get(event.get("type"))
    if kind is None:
        return None
    delta = event.get("delta")
    return [kind(shared_text(delta))] if delta else []


def wire_incomplete_reason(response: dict[str, Any]) -> FinishReason:
    """:func:`incomplete_reason` for the fast path, over the response's JSON data."""
    details = response.get("incomplete_details")
    return "content_filter" if details and details.get("reason") == "content_filter" else "length"


# What the warm-up's canned upstream answers (``_warm.py``): one Chat Completions chunk, then the end.
_WARM_BODY = (
    b'data: {"id":"warm-up","object":"chat.completion.chunk","created":0,"model":"warm-up",'
    b'"choices":[{"index":0,"delta":{"content":"."},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


class OpenAIOptions(TypedDict, total=False):
    """:class:`OpenAIBackendBase`'s keyword arguments besides ``model``, for a subclass that adds its own."""

    base_url: str | None
    api_key: str | None
    max_tokens: int | None
    temperature: float | None
    system_prompt: str | None
    timeout_s: float
    max_retries: int
    fast_path: bool


class OpenAIBackendBase(TranslatingBackend["AsyncOpenAI", _Item]):
    """The configuration, client and lifecycle the Chat Completions and Responses backends share."""

    name = "openai"
    api: ClassVar[str]

    def __init__(
        self,
        *,
        model: str | None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        system_prompt: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        fast_path: bool = True,
    ) -> None:
        super().__init__()
        self.fast_path = fast_path
        self.config = OpenAIConfig(
            "openai", model=model, base_url=base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries
        )
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt

    def new_client(self) -> AsyncOpenAI:
        return self.config.client(lean=self.fast_path)

    async def start(self) -> None:
        from tokenrelay.backends._warm import canned_transport, warm_up

        await warm_up(self, self.config.client(transport=canned_transport(_WARM_BODY)))

    def describe(self) -> dict[str, Any]:
        return {"api": self.api, **self.config.describe(), **self.stats.as_dict()}
