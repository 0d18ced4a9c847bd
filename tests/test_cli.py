"""The command line, as a user runs it: real processes, a real port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import wait_for

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Output:
    """Collects a process's output on a thread, so tests can wait for text with a timeout."""

    def __init__(self, stream: object) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        while chunk := os.read(stream.fileno(), 4096):  # type: ignore[attr-defined]
            self.text += chunk.decode("utf-8", "replace")


def start_server(*flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "tokenrelay", "serve", "--backend", "synthetic", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=20, what="the server to answer /api/health")
    return proc, url


@pytest.fixture
def server() -> Iterator[str]:
    proc, url = start_server("--synthetic-tokens", "200", "--synthetic-interval-ms", "25")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_chat_prints_the_answer_and_exits(server: str) -> None:
    proc, url = start_server("--synthetic-text", "Hello from the relay.")
    try:
        out = subprocess.run(
            [PY, "-m", "tokenrelay", "chat", "--url", url, "hi"], capture_output=True, text=True, timeout=30
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello from the relay.\n"


def test_ctrl_c_stops_the_generation_not_the_program(server: str) -> None:
    chat = subprocess.Popen(
        [PY, "-m", "tokenrelay", "chat", "--url", server],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert chat.stdin is not None
    out = Output(chat.stdout)
    try:
        chat.stdin.write(b"tell me everything\n")
        chat.stdin.flush()
        wait_for(lambda: "Tokens stream" in out.text, timeout=20, what="tokens to arrive")
        chat.send_signal(signal.SIGINT)
        wait_for(lambda: "[stopped]" in out.text, timeout=10, what="the stream to stop")
        wait_for(
            lambda: httpx.get(f"{server}/api/health").json()["active_runs"] == 0,
            timeout=5,
            what="the server to cancel the run",
        )
        assert chat.poll() is None  # still running, waiting for the next message
        chat.stdin.close()  # EOF ends the session
        assert chat.wait(10) == 0
    finally:
        if chat.poll() is None:
            chat.kill()
    health = httpx.get(f"{server}/api/health").json()
    assert health["backend_info"]["streams_cancelled"] == 1


def one_line_error(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = subprocess.run(
        [PY, "-m", "tokenrelay", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    return out.returncode, out.stderr


def test_missing_model_file_stops_serve_with_one_line() -> None:
    code, err = one_line_error("--backend", "local", "--model-path", "/nonexistent/model.gguf")
    assert code == 1
    assert err.strip() == "tokenrelay: error: model file not found: /nonexistent/model.gguf"


def test_unknown_backend_in_the_environment_stops_serve_with_one_line() -> None:
    code, err = one_line_error(env={"TOKENRELAY_BACKEND": "gpt-17"})
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("tokenrelay: error: TOKENRELAY_BACKEND:")
    assert "Traceback" not in err


def test_unknown_backend_flag_is_refused() -> None:
    code, err = one_line_error("--backend", "gpt-17")
    assert code == 2
    assert "invalid choice: 'gpt-17'" in err
    assert "Traceback" not in err


def test_bad_sampling_flag_names_the_flag() -> None:
    code, err = one_line_error("--backend", "synthetic", "--temperature", "9")
    assert code == 2
    assert err.strip().startswith("tokenrelay: error: --temperature:")


def test_chat_against_nothing_is_a_clear_error() -> None:
    out = subprocess.run(
        [PY, "-m", "tokenrelay", "chat", "--url", f"http://127.0.0.1:{free_port()}", "hi"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "cannot reach" in out.stderr
