"""Configuration: every bad setting is one clear line that names the flag; a missing SDK names its extra."""

from __future__ import annotations

import sys

import pytest

from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.anthropic import AnthropicBackend
from tokenrelay.backends.base import BackendError, GenerateOptions
from tokenrelay.backends.openai_chat import OpenAIChatBackend
from tokenrelay.backends.openai_responses import OpenAIResponsesBackend
from tokenrelay.cli import main
from tokenrelay.server.factory import build_backend
from tokenrelay.server.settings import Settings


@pytest.fixture(autouse=True)
def no_vendor_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def build(**fields: object) -> object:
    return build_backend(Settings(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"backend": "openai", "model": "m", "base_url": "http://h/v1"}, OpenAIChatBackend),
        (
            {"backend": "openai", "model": "m", "base_url": "http://h/v1", "openai_api": "responses"},
            OpenAIResponsesBackend,
        ),
        ({"backend": "anthropic", "model": "claude-sonnet-4-6", "api_key": "k"}, AnthropicBackend),
        ({"backend": "agents", "model": "m", "base_url": "http://h/v1", "mcp_url": ["http://h/mcp"]}, AgentsBackend),
    ],
)
def test_factory_builds_each_backend(fields: dict[str, object], kind: type) -> None:
    assert isinstance(build(**fields), kind)


def test_factory_passes_the_shared_settings() -> None:
    backend = build(
        backend="agents",
        model="m",
        base_url="http://h/v1",
        api_key="sk-x",
        system_prompt="Be kind.",
        max_tokens=99,
        temperature=0.1,
        mcp_url=["http://h/mcp"],
        mcp_header=["Authorization: Bearer t"],
        agent_max_turns=3,
    )
    assert isinstance(backend, AgentsBackend)
    assert (backend.instructions, backend.max_tokens, backend.temperature) == ("Be kind.", 99, 0.1)
    assert backend.config.api_key == "sk-x"
    assert backend.mcp_headers == {"Authorization": "Bearer t"}
    assert backend.max_turns == 3


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"backend": "openai", "base_url": "http://h/v1"}, "--backend openai needs a model name: --model NAME"),
        ({"backend": "openai", "model": "gpt-4.1"}, "needs --api-key KEY (or OPENAI_API_KEY)"),
        ({"backend": "openai", "model": "m", "base_url": "localhost:8080"}, "--base-url must be an http://"),
        ({"backend": "anthropic"}, "--backend anthropic needs a model name"),
        ({"backend": "anthropic", "model": "claude-sonnet-4-6"}, "needs an API key: --api-key KEY"),
        (
            {"backend": "anthropic", "model": "c", "api_key": "k", "thinking_budget": 2048, "max_tokens": 1024},
            "--thinking-budget (2048) must be below --max-tokens (1024)",
        ),
        ({"backend": "agents", "base_url": "http://h/v1"}, "--backend agents needs a model name"),
        ({"backend": "agents", "model": "m", "base_url": "http://h/v1", "mcp_url": ["h:1/mcp"]}, "--mcp-url takes"),
        (
            {"backend": "agents", "model": "m", "base_url": "http://h/v1", "mcp_header": ["Authorization"]},
            "--mcp-header expects 'Name: value'",
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(fields: dict[str, object], words: str) -> None:
    with pytest.raises(BackendError) as caught:
        build(**fields)
    assert caught.value.code == "bad_config"
    assert words in caught.value.message
    assert "\n" not in caught.value.message


def test_openai_key_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    backend = build(backend="openai", model="gpt-4.1")
    assert isinstance(backend, OpenAIChatBackend)
    assert backend.config.api_key == "sk-env"
    params = backend.params([], GenerateOptions(max_tokens=5))
    assert params["max_completion_tokens"] == 5  # OpenAI itself gets the newer name its reasoning models require


@pytest.mark.parametrize(
    ("backend", "module", "extra"),
    [("openai", "openai", "openai"), ("anthropic", "anthropic", "anthropic"), ("agents", "agents", "agents")],
)
def test_missing_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, backend: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(BackendError) as caught:
        build(backend=backend, model="m", base_url="http://h/v1", api_key="k")
    assert caught.value.code == "missing_extra"
    assert f"pip install 'tokenrelay[{extra}]'" in caught.value.message


def test_serve_fails_with_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--backend", "openai", "--base-url", "http://127.0.0.1:1/v1"])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == "tokenrelay: error: --backend openai needs a model name: --model NAME"


def test_api_key_is_secret_in_settings() -> None:
    settings = Settings(backend="openai", api_key="sk-secret")  # type: ignore[arg-type]
    assert "sk-secret" not in repr(settings)


def test_describe_keeps_secrets_out_of_health() -> None:
    backend = build(
        backend="agents",
        model="m",
        base_url="http://user:pw@llm.internal:8000/v1?key=1",
        api_key="sk-secret",
        mcp_url=["https://mcp.example/mcp?token=abc"],
    )
    facts = repr(backend.describe())  # type: ignore[attr-defined]
    for secret in ("sk-secret", "pw", "token=abc", "key=1"):
        assert secret not in facts
    assert "http://llm.internal:8000/v1" in facts
    assert "https://mcp.example/mcp" in facts
