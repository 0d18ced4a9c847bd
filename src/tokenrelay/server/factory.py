"""Build what the settings describe: the backend, the run store, the history, who a request acts as.

Heavy dependencies (a vendor SDK, llama.cpp, Redis, SQLAlchemy) are imported only when chosen.
"""

from __future__ import annotations

from typing import Any

from tokenrelay.backends.base import Backend
from tokenrelay.history.base import History
from tokenrelay.history.memory import MemoryHistory
from tokenrelay.server.auth import BearerTokenAuth, UserResolver, anonymous_or_claimed, load_tokens
from tokenrelay.server.settings import Settings
from tokenrelay.stores.base import RunStore
from tokenrelay.stores.memory import MemoryRunStore

__all__ = ["build_backend", "build_history", "build_store", "build_user_resolver"]


def build_store(settings: Settings) -> RunStore:
    """The run store the settings describe (Redis is imported only when chosen)."""
    if settings.store == "redis":
        from tokenrelay.stores.redis import RedisRunStore

        return RedisRunStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            ttl_s=settings.run_ttl_s,
            liveness_s=settings.liveness_s,
            socket_timeout_s=settings.redis_socket_timeout_s,
            cluster=settings.redis_cluster,
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


def build_backend(settings: Settings) -> Backend:
    """The backend the settings describe."""
    if settings.backend == "synthetic" and settings.synthetic_script is not None:
        from tokenrelay.backends.script_file import ScriptFileBackend

        return ScriptFileBackend.from_file(settings.synthetic_script)
    if settings.backend == "synthetic":
        from tokenrelay.backends.synthetic import SyntheticBackend

        return SyntheticBackend(
            tokens=settings.synthetic_tokens,
            interval_ms=settings.synthetic_interval_ms,
            token=settings.synthetic_token,
            text=settings.synthetic_text,
            fail_after=settings.synthetic_fail_after,
            initial_delay_ms=settings.synthetic_initial_delay_ms,
        )
    if settings.backend == "local":
        from tokenrelay.backends.local import LocalBackend

        return LocalBackend(
            model_path=settings.model_path,
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            max_tokens=settings.max_tokens,
            # A model this small needs a low temperature to stay coherent; remote providers keep their own default
            # (reasoning models refuse any other), so the setting is unset unless the user gives one.
            temperature=0.6 if settings.temperature is None else settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            repeat_penalty=settings.repeat_penalty,
            seed=settings.seed,
            system_prompt=settings.system_prompt,
            max_queue=settings.max_queue,
        )
    if settings.backend in ("openai", "anthropic", "agents"):
        return _build_remote(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")


def _build_remote(settings: Settings) -> Backend:
    """The backends that call a vendor's API; each checks its configuration and its extra as it is built."""
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    common: dict[str, Any] = {
        "model": settings.model,
        "base_url": settings.base_url,
        "api_key": api_key,
        "temperature": settings.temperature,
        "timeout_s": settings.request_timeout_s,
        "max_retries": settings.max_retries,
    }
    if settings.backend == "anthropic":
        from tokenrelay.backends.anthropic import AnthropicBackend

        return AnthropicBackend(
            **common,
            max_tokens=settings.max_tokens,
            system_prompt=settings.system_prompt,
            thinking_budget=settings.thinking_budget,
        )
    if settings.backend == "agents":
        from tokenrelay.backends.agents import AgentsBackend, parse_headers

        return AgentsBackend(
            **common,
            openai_api=settings.openai_api,
            max_tokens=settings.max_tokens,
            instructions=settings.system_prompt,
            agent_name=settings.agent_name,
            max_turns=settings.agent_max_turns,
            mcp_urls=settings.mcp_url,
            mcp_headers=parse_headers(settings.mcp_header),
            mcp_timeout_s=settings.mcp_timeout_s,
            tool_choice=settings.agent_tool_choice,
            parallel_tool_calls=settings.agent_parallel_tool_calls,
            extra_model_settings=settings.agent_model_settings,
            approval_tools=settings.approval_tools,
        )
    if settings.openai_api == "responses":
        from tokenrelay.backends.openai_responses import OpenAIResponsesBackend

        return OpenAIResponsesBackend(**common, max_tokens=settings.max_tokens, system_prompt=settings.system_prompt)
    from tokenrelay.backends.openai_chat import OpenAIChatBackend

    return OpenAIChatBackend(**common, max_tokens=settings.max_tokens, system_prompt=settings.system_prompt)
