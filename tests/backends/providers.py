"""Each remote provider's backend, pointed at a replay server: what the contract suite and the per-provider
tests build."""

from __future__ import annotations

from tests.backends.replay import ReplayServer
from tokenrelay.backends.anthropic import AnthropicBackend
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.backends.openai_responses import OpenAIResponsesBackend


def openai_chat(replay: ReplayServer, **kwargs: object) -> OpenAIChatBackend:
    options: dict[str, object] = {"model": "gpt-4.1-mini", "base_url": f"{replay.url}/v1", "max_retries": 0}
    return OpenAIChatBackend(**(options | kwargs))  # type: ignore[arg-type]


def openai_responses(replay: ReplayServer, **kwargs: object) -> OpenAIResponsesBackend:
    options: dict[str, object] = {"model": "gpt-4.1-mini", "base_url": f"{replay.url}/v1", "max_retries": 0}
    return OpenAIResponsesBackend(**(options | kwargs))  # type: ignore[arg-type]


def anthropic(replay: ReplayServer, **kwargs: object) -> AnthropicBackend:
    options: dict[str, object] = {
        "model": "claude-sonnet-4-6",
        "base_url": replay.url,
        "api_key": "sk-ant-test",
        "max_retries": 0,
    }
    return AnthropicBackend(**(options | kwargs))  # type: ignore[arg-type]
