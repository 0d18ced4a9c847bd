"""Every Python and shell example of README.md and docs/*.md, run as a reader would run it.

The rules (a snippet that follows them runs here as written):

- Blocks tagged ``python``/``py`` run as a script with .venv's python; ``bash``/``sh``/``shell`` under
  ``bash -euo pipefail`` with .venv/bin first on PATH; ``console`` blocks are ``$ command`` lines, each followed by
  the output it must print (``…`` stands for any text). Any other tag (``text``, ``toml``, ``nginx``…) is not run.
- Each block runs on its own, in the repository's root, in a fresh process: nothing carries over from the block
  before, so a flow (start a run, then resume it) is one block.
- Snippets talk to ``http://127.0.0.1:8000`` (or ``localhost:8000``) literally. For a block that starts no server,
  that is the module's server (``tokenrelay serve --backend synthetic --history memory`` on a free port, in a tmp
  cwd); ``TOKENRELAY_URL`` points ``tokenrelay chat`` at it too. Other literal ports 8001–8009 get free ports.
- ``make run`` and ``tokenrelay serve …`` lines start in the background (on free ports: ``TOKENRELAY_PORT`` and
  ``PORT`` are set for each), the next command waits until each answers ``/api/health`` with 200, and every one is
  stopped when the block ends. Several server lines in a row start together; the first default-port one is the
  block's 8000. A server that names no ``--backend`` runs the synthetic one (``TOKENRELAY_BACKEND=synthetic``),
  not the embedded model. Nothing is installed or rebuilt here.
- ``pip install 'tokenrelay[extra]'`` is checked, not run (tests/docs/pip_check.py); any other pip command fails.
- ``curl`` fails on an HTTP error status (the runner's curl adds ``--fail-with-body``), so an example that gets a
  404 fails; console blocks, whose output is compared, see any status.
- Secrets the examples read (``$OPENAI_API_KEY``, ``$ANTHROPIC_API_KEY``, ``$MCP_TOKEN``) are fakes; the
  production hosts ``redis`` and ``db`` of the examples become the test Redis (with a key prefix of the test's
  own) and the block's SQLite history (each block has its own, copied from a migrated one).
- A block that cannot run here is in ``SKIPS`` (a text only that block contains → why), or has a first line
  ``# docs: skip — why``; ``test_skips_still_match`` fails when an entry no longer matches exactly one block.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, free_port
from tests.docs.extract import (
    CONSOLE_TAGS,
    PYTHON_TAGS,
    ROOT,
    Block,
    all_blocks,
    console_script,
    literal_ports,
    logical_lines,
    server_port,
    shell_script,
    starts_server,
    substitute_ports,
)

SKIPS: dict[str, str] = {
    "make run ": "installs into .venv (pip) and rebuilds the page (npm) whenever pyproject.toml or web/ changed,"
    " which a test must not do in a shared checkout; the server it starts is `tokenrelay serve`, run by other blocks",
    "make test": "runs every check and test of the project, this one included",
    "make bench": "the benchmark runs for minutes (about 14; --quick about 4); bench has tests of its own",
}
BLOCK_TIMEOUT_S = 100
PARALLEL = 3
SERVER_TIMEOUT_S = 60
VENV_BIN = ROOT / ".venv" / "bin"
PREAMBLE = Path(__file__).with_name("preamble.sh").read_text(encoding="utf-8")

BLOCKS = [block for block in all_blocks() if block.runnable]


def skip_reason(block: Block) -> str | None:
    first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
    if first.startswith("# docs: skip"):
        return first.removeprefix("# docs: skip").strip(" —-:") or "marked in the block"
    return next((why for text, why in SKIPS.items() if text in block.code), None)


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory: pytest.TempPathFactory, _history_template: Path) -> Iterator[dict[str, str]]:
    """The module's server and the environment every block runs in."""
    home = tmp_path_factory.mktemp("docs")
    shims = home / "bin"
    shims.mkdir()
    pip = shims / "pip"
    pip.write_text(f'#!/bin/sh\nexec "{VENV_BIN / "python"}" "{Path(__file__).with_name("pip_check.py")}" "$@"\n')
    pip.chmod(0o755)
    curl = shims / "curl"
    real_curl = shutil.which("curl") or "curl"
    curl.write_text(
        f'#!/bin/sh\n[ -n "${{DOCS_CURL_ANY_STATUS:-}}" ] && exec "{real_curl}" "$@"\n'
        f'exec "{real_curl}" --fail-with-body "$@"\n'
    )
    curl.chmod(0o755)
    prefix = f"tokenrelay-docs:{secrets.token_hex(6)}:"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENRELAY_")}
    env.update(
        PATH=f"{shims}:{VENV_BIN}:{os.environ['PATH']}",
        TOKENRELAY_DATABASE_URL=f"sqlite+aiosqlite:///{home / 'tokenrelay.db'}",
        TOKENRELAY_REDIS_PREFIX=prefix,
        TOKENRELAY_BACKEND="synthetic",
        OPENAI_API_KEY="sk-docs-test",
        ANTHROPIC_API_KEY="sk-ant-docs-test",
        MCP_TOKEN="docs-test",
        DOCS_SERVER_TIMEOUT=str(SERVER_TIMEOUT_S),
    )
    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "tokenrelay"), "serve", "--backend", "synthetic", "--history", "memory", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=(home / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(port, server, home / "server.log")
        yield {**env, "DOCS_PORT": str(port), "DOCS_HISTORY_TEMPLATE": str(_history_template)}
    finally:
        stop_group(server.pid)
        server.wait(15)
        delete_keys(prefix)


def wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the docs server exited: {log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the docs server did not answer within {SERVER_TIMEOUT_S}s: {log.read_text()}")


def stop_group(pgid: int, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def delete_keys(prefix: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception:  # no Redis here: then no block wrote to it either
        pass


def prepared(block: Block, env: dict[str, str]) -> tuple[list[str], str, dict[str, str]]:
    """The command, the script text and the environment that run ``block``."""
    code = block.code
    for production, here in (
        ("redis://redis:6379/0", REDIS_URL),
        ("postgresql://tokenrelay@db/tokenrelay", env["TOKENRELAY_DATABASE_URL"]),
    ):
        code = code.replace(production, here)
    own_default = block.tag not in PYTHON_TAGS and any(
        starts_server(line) and server_port(line) in (None, 8000) for line in logical_lines(code)
    )
    ports = {port: free_port() for port in literal_ports(code) if port != 8000}
    ports[8000] = free_port() if own_default else int(env["DOCS_PORT"])
    code = substitute_ports(code, ports)
    run_env = {**env, "TOKENRELAY_URL": f"http://127.0.0.1:{ports[8000]}"}
    if block.tag in PYTHON_TAGS:
        return [str(VENV_BIN / "python"), "-"], code, run_env
    spare = iter([ports[8000], *(free_port() for _ in range(8))])
    body = console_script(code) if block.tag in CONSOLE_TAGS else shell_script(code, spare)
    return ["bash", "-euo", "pipefail", "-s"], PREAMBLE + body, run_env


def run_block(block: Block, env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    # A history of the block's own (copied from a migrated one): blocks run side by side, and servers that
    # start together on one fresh SQLite file would race to create its tables.
    shutil.copyfile(env["DOCS_HISTORY_TEMPLATE"], workdir / "tokenrelay.db")
    env = {**env, "TOKENRELAY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'tokenrelay.db'}"}
    command, script, run_env = prepared(block, env)
    pidfile = workdir / "servers.pids"
    run_env.update(DOCS_TMP=str(workdir), DOCS_PIDFILE=str(pidfile))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=run_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(script, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_group(process.pid)
        out, err = process.communicate(timeout=20)
        err += f"\ndocs test: the block ran longer than {BLOCK_TIMEOUT_S}s and was stopped"
    finally:
        for pid in pidfile.read_text().split() if pidfile.exists() else []:
            stop_group(int(pid), signal.SIGKILL)  # a server the block's own cleanup left behind
    return subprocess.CompletedProcess(command, process.returncode, out, err)


Outcome = tuple[subprocess.CompletedProcess[str], Path]


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, docs_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every selected block, run PARALLEL at a time (most of a block's time is a server or an interpreter
    starting); each test case then waits for its own block's outcome."""
    selected = [
        param
        for item in request.session.items
        if isinstance(item, pytest.Function) and hasattr(item, "callspec")
        for param in [item.callspec.params.get("block")]
        if isinstance(param, Block) and skip_reason(param) is None
    ]

    def run(block: Block, workdir: Path) -> Outcome:
        return run_block(block, docs_env, workdir), workdir

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        yield {block.name: pool.submit(run, block, tmp_path_factory.mktemp("block")) for block in selected}


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_example(block: Block, outcomes: dict[str, Future[Outcome]]) -> None:
    reason = skip_reason(block)
    if reason is not None:
        pytest.skip(f"{block.name}: {reason}")
    result, workdir = outcomes[block.name].result()
    if result.returncode != 0:
        logs = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in workdir.glob("*.log"))
        pytest.fail(
            f"{block.name} ({block.section}) exited {result.returncode}\n--- block\n{block.code}"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}{logs}",
            pytrace=False,
        )


def test_skips_still_match() -> None:
    """Each skip names exactly one runnable block: a skip whose block changed or left is an error, not a no-op."""
    for text, why in SKIPS.items():
        matching = [block.name for block in BLOCKS if text in block.code]
        assert len(matching) == 1, f"SKIPS[{text!r}] ({why}) matches {matching or 'no block'}"


def test_the_docs_have_examples() -> None:
    """The extractor finds the README's examples: an empty parametrization would pass without running any."""
    names = {block.path for block in BLOCKS}
    assert "README.md" in names
    assert sum(block.tag in PYTHON_TAGS for block in BLOCKS) >= 3
    assert len(BLOCKS) - sum(skip_reason(block) is not None for block in BLOCKS) >= 10


def test_an_example_that_stopped_working_fails(docs_env: dict[str, str], tmp_path: Path) -> None:
    """The resume of another user's run (here: a run of alice's, resumed without her user_id) is a 404, and the
    block running it fails: a snippet that stops working fails the suite."""
    code = (
        "RUN_ID=$(curl -s -o /dev/null -D - http://127.0.0.1:8000/api/chat/stream -H 'content-type: application/json'"
        ' -d \'{"message": "Hello", "user_id": "alice"}\' | tr -d \'\\r\' | awk \'tolower($1) == "x-run-id:"'
        " {print $2}')\ncurl -sN http://127.0.0.1:8000/api/runs/$RUN_ID/stream -H 'Last-Event-ID: 12'\n"
    )
    result = run_block(Block("README.md", 1, "sh", code, "Resume"), docs_env, tmp_path)
    assert result.returncode == 22, result.stderr  # curl's exit status for an HTTP error
    assert '"code":"run_not_found"' in result.stdout
