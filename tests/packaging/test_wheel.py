"""The package as people install it: ``python -m build`` in a clean tree, the wheel in a fresh virtualenv on a
machine without Node, ``tokenrelay serve`` from there, and the chat page answering in a real browser.

The sdist and the wheel are built once per session (from a copy of the tree holding only what a clone holds, plus
the chat page ``make web`` built); the virtualenv is made once too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, IN_CI, STATIC_INDEX, get_json, wait_until

CLONE = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def _run(command: list[str], *, timeout: float, **options: Any) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **options)
    if done.returncode != 0:
        raise AssertionError(f"{command} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _clean_tree(target: Path, *, page: bool = True) -> None:
    """What a clone holds (tracked and new, not ignored, files) and, with ``page``, the built chat page."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=CLONE, timeout=60)
    built = [p.relative_to(CLONE).as_posix() for p in STATIC_INDEX.parent.rglob("*") if p.is_file()] if page else []
    for name in [*listed.split("\0"), *built]:
        source = CLONE / name
        if name and source.is_file():  # a file deleted in the working tree is still listed by git
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@dataclass
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    if not STATIC_INDEX.is_file():
        _unavailable(f"{STATIC_INDEX} is missing: build the chat page first (make web)")
    root = tmp_path_factory.mktemp("dist")
    _clean_tree(root / "tree")
    # As a user would: the sdist from the tree, then the wheel from the unpacked sdist (build's default).
    _run([sys.executable, "-m", "build", "--outdir", str(root / "out"), str(root / "tree")], timeout=300)
    return Dist(root / "out" / f"tokenrelay-{VERSION}.tar.gz", root / "out" / f"tokenrelay-{VERSION}-py3-none-any.whl")


def _page_files(names: list[str], prefix: str) -> tuple[list[str], list[str]]:
    static = f"{prefix}tokenrelay/server/static/"
    return [n for n in names if n == f"{static}index.html"], [n for n in names if n.startswith(f"{static}assets/")]


def test_the_wheel_carries_the_page_and_the_license(dist: Dist) -> None:
    names = zipfile.ZipFile(dist.wheel).namelist()
    index, assets = _page_files(names, "")
    assert index
    assert any(n.endswith(".js") for n in assets)
    assert any(n.endswith(".css") for n in assets)
    # Every asset the page refers to is in the wheel.
    html = zipfile.ZipFile(dist.wheel).read(index[0]).decode()
    for asset in assets:
        if asset.endswith((".js", ".css")):
            assert f"/assets/{asset.rsplit('/', 1)[1]}" in html
    assert f"tokenrelay-{VERSION}.dist-info/licenses/LICENSE" in names
    license_text = zipfile.ZipFile(dist.wheel).read(f"tokenrelay-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert license_text == (CLONE / "LICENSE").read_text()
    assert "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    metadata = zipfile.ZipFile(dist.wheel).read(f"tokenrelay-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata


def test_the_sdist_carries_the_page_and_no_build_leftovers(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        names = archive.getnames()
    prefix = f"tokenrelay-{VERSION}/"
    index, assets = _page_files(names, f"{prefix}src/")
    assert index
    assert any(n.endswith(".js") for n in assets)
    assert f"{prefix}LICENSE" in names
    assert f"{prefix}src/tokenrelay/_extras.py" in names
    leftovers = [n for n in names if "/node_modules/" in n or "/.venv/" in n or "__pycache__" in n]
    assert leftovers == []


@pytest.fixture(scope="session")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its dependencies from PyPI (no extra: the synthetic backend)."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], timeout=120)
    pip = [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", str(dist.wheel)], timeout=600)
    return path


def _path_without_node(venv: Path) -> str:
    dirs = [str(venv / "bin")]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and not any((Path(entry) / tool).exists() for tool in ("node", "npm", "npx")):
            dirs.append(entry)
    path = os.pathsep.join(dirs)
    assert shutil.which("node", path=path) is None
    assert shutil.which("npm", path=path) is None
    return path


class InstalledServer:
    """``tokenrelay serve`` from the fresh virtualenv, on a free port: its own PATH (no Node), its own directory,
    nothing of the clone's environment."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        args = ["--backend", "synthetic", "--port", str(self.port), "--synthetic-tokens", "30"]
        args += ["--synthetic-interval-ms", "30", "--synthetic-token", "tok "]
        self.process = subprocess.Popen(
            [str(venv / "bin" / "tokenrelay"), "serve", *args],
            cwd=workdir,
            env={"PATH": _path_without_node(venv), "HOME": str(workdir), "LANG": "C.UTF-8"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log()}")
        try:
            return bool(get_json(f"{self.url}/api/health").get("status") == "ok")
        except (OSError, ValueError):
            return False

    def wait_ready(self) -> None:
        wait_until(self._ready, timeout=60, what=f"the installed server at {self.url}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.mark.slow
@pytest.mark.e2e
def test_the_installed_wheel_serves_a_working_page_without_node(venv: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: install Debian's chromium (make browser)")
    from playwright.sync_api import sync_playwright

    where = _run(
        [str(venv / "bin" / "python"), "-c", "import tokenrelay.server.app as a; print(a.static_dir())"],
        cwd=tmp_path,
        env={"PATH": _path_without_node(venv)},
        timeout=60,
    ).strip()
    assert Path(where).is_relative_to(venv)  # the installed copy, not the clone
    assert (Path(where) / "index.html").is_file()

    server = InstalledServer(venv, tmp_path / "server")
    try:
        server.wait_ready()
        assert get_json(f"{server.url}/api/health")["backend"] == "synthetic"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                _chat_in_the_page(browser, server.url)
            finally:
                browser.close()
        assert "chat page" not in server.log()  # no "the chat page is missing" at start
    finally:
        server.stop()


def _chat_in_the_page(browser: Any, url: str) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(20_000)
    page.goto(url)
    box = page.get_by_label("Message")
    box.fill("Hello from the wheel")
    box.press("Enter")
    answer = page.locator("[data-role='assistant']").last
    # It streams: the answer is seen while still streaming, then done with the whole text.
    wait_until(
        lambda: page.evaluate(
            """() => { const a = [...document.querySelectorAll("[data-role='assistant']")].pop();
                       return !!a && a.dataset.status === 'streaming' && a.textContent.length > 0; }"""
        ),
        timeout=20,
        what="the answer to stream in",
        interval=0.01,
    )
    page.locator("[data-role='assistant'][data-status='done']").wait_for()
    assert (answer.locator(".message-body").text_content() or "").split() == ["tok"] * 30
    assert errors == []


@pytest.mark.slow
@pytest.mark.timeout(900)  # the build alone may take its 600 s on a loaded machine
def test_building_in_a_clone_without_the_page_builds_it(tmp_path: Path) -> None:
    """``python -m build`` right after a clone (no ``make web``) runs ``npm run build`` itself."""
    node_modules = CLONE / "web" / "node_modules"
    if shutil.which("npm") is None or not node_modules.is_dir():
        _unavailable("npm and web/node_modules are needed (make web-deps)")
    tree = tmp_path / "tree"
    _clean_tree(tree, page=False)
    assert not (tree / "src" / "tokenrelay" / "server" / "static").exists()
    # The packages npm ci would install, copied rather than downloaded again (links stay inside the copy).
    shutil.copytree(node_modules, tree / "web" / "node_modules", symlinks=True)
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "out"), str(tree)], timeout=600)
    with tarfile.open(tmp_path / "out" / f"tokenrelay-{VERSION}.tar.gz") as archive:
        index, assets = _page_files(archive.getnames(), f"tokenrelay-{VERSION}/src/")
    assert index
    assert any(n.endswith(".js") for n in assets)
