"""The chat page's files are looked up at each request, and a server without them says so, with what builds them."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_server
from tokenrelay.backends import SyntheticBackend
from tokenrelay.server import app as app_module
from tokenrelay.server.app import create_app, missing_page_hint, static_dir
from tokenrelay.server.settings import Settings

CLONE = Path(__file__).resolve().parents[2]


def _page(static: Path) -> None:
    (static / "assets").mkdir(parents=True)
    (static / "assets" / "index-abc.js").write_text("console.log('chat')\n")
    (static / "index.html").write_text('<!doctype html><script type="module" src="/assets/index-abc.js"></script>\n')


async def test_a_page_built_after_the_server_started_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    static = tmp_path / "site-packages" / "tokenrelay" / "server" / "static"
    monkeypatch.setattr(app_module, "static_dir", lambda: static)
    app = create_app(Settings(backend="synthetic", history="memory"), SyntheticBackend(tokens=1, interval_ms=0))
    with caplog.at_level(logging.WARNING, logger="tokenrelay.server"):
        async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            # Not built yet: the start said so, the page says what to do, assets are plain 404s.
            warnings = [r.getMessage() for r in caplog.records if r.name == "tokenrelay.server"]
            assert warnings == [f"tokenrelay: the chat page at / is missing: {missing_page_hint(static)}"]
            missing = await client.get("/")
            assert missing.status_code == 200
            assert "The chat page is missing" in missing.text
            assert "this installation of tokenrelay has no" in missing.text
            assert (await client.get("/assets/index-abc.js")).status_code == 404

            _page(static)  # e.g. `make web` while the server runs

            page = await client.get("/")
            assert page.text.startswith("<!doctype html><script")
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            script = await client.get("/assets/index-abc.js")
            assert script.status_code == 200
            assert script.text == "console.log('chat')\n"
            assert (await client.get("/assets/nothing.js")).status_code == 404


async def test_a_built_page_logs_nothing_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    static = tmp_path / "static"
    _page(static)
    monkeypatch.setattr(app_module, "static_dir", lambda: static)
    app = create_app(Settings(backend="synthetic", history="memory"), SyntheticBackend(tokens=1, interval_ms=0))
    with caplog.at_level(logging.WARNING, logger="tokenrelay.server"):
        async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/assets/index-abc.js")).status_code == 200
    assert not [r for r in caplog.records if "chat page" in r.getMessage()]


def test_the_hint_is_make_web_in_a_clone_and_a_complete_wheel_otherwise(tmp_path: Path) -> None:
    assert static_dir() == CLONE / "src" / "tokenrelay" / "server" / "static"  # these tests run from a clone
    assert missing_page_hint(static_dir()) == f"build it with `make web` in {CLONE} (needs Node 20+)"
    installed = tmp_path / "lib" / "python3.11" / "site-packages" / "tokenrelay" / "server" / "static"
    assert missing_page_hint(installed) == (
        f"this installation of tokenrelay has no {installed}: install a wheel built with the page "
        "(`make web` then `python -m build` in a clone)"
    )
