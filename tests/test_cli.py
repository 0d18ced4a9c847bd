"""The command line, as a user runs it: real processes, a real port."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server, wait_for
from tokenrelay.cli import main

PY = sys.executable
DIM, RESET = "\x1b[2m", "\x1b[0m"


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
        try:
            while chunk := os.read(stream.fileno(), 4096):  # type: ignore[attr-defined]
                self.text += chunk.decode("utf-8", "replace")
        except OSError:
            pass  # a pseudo-terminal whose process has exited reads as EIO, not as EOF


def start_server(*flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "tokenrelay",
            "serve",
            "--backend",
            "synthetic",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *flags,
        ],
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

    try:
        wait_for(up, timeout=60, what="the server to answer /api/health")
    except BaseException:
        proc.kill()  # a server that never answered is not left behind
        proc.wait()
        raise
    return proc, url


@contextmanager
def module_server(where: Path, *flags: str) -> Iterator[str]:
    """A server for a module's tests, with its history in a SQLite file of its own (the default history)."""
    proc, url = start_server("--database-url", f"sqlite+aiosqlite:///{where / 'history.db'}", *flags)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def detached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A long answer, and "detach": a dropped connection keeps the run for 30 s, so only a cancel ends it at once."""
    flags = ("--synthetic-tokens", "400", "--synthetic-interval-ms", "25", "--on-disconnect", "detach")
    with module_server(tmp_path_factory.mktemp("detached"), *flags) as url:
        yield url


def cancelled_so_far(url: str) -> int:
    return int(httpx.get(f"{url}/api/health", timeout=30).json()["backend_info"]["streams_cancelled"])


def test_chat_prints_the_answer_and_exits(scripted: str) -> None:
    out = run_chat(scripted, "hi")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello!\n"


def test_ctrl_c_stops_the_generation_not_the_program(detached: str) -> None:
    url = detached
    before = cancelled_so_far(url)
    conversations_before = len(httpx.get(f"{url}/api/conversations", timeout=30).json()["conversations"])
    chat = subprocess.Popen(
        [PY, "-m", "tokenrelay", "chat", "--url", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert chat.stdin is not None
    out = Output(chat.stdout)
    try:
        chat.stdin.write(b"tell me everything\n")
        chat.stdin.flush()
        wait_for(lambda: "Tokens stream" in out.text, timeout=60, what="tokens to arrive")
        chat.send_signal(signal.SIGINT)
        wait_for(lambda: "[stopped]" in out.text, timeout=30, what="the stream to stop")
        wait_for(
            lambda: httpx.get(f"{url}/api/health", timeout=30).json()["active_runs"] == 0,
            timeout=30,
            what="the server to cancel the run",
        )
        assert chat.poll() is None  # still running, waiting for the next message
        chat.stdin.write(b"and now?\n")  # the next message goes on in the same conversation
        chat.stdin.flush()
        wait_for(lambda: "You said: and now?" in out.text, timeout=60, what="the next answer")
        chat.send_signal(signal.SIGINT)
        wait_for(lambda: out.text.count("[stopped]") == 2, timeout=30, what="the second stop")
        chat.stdin.close()  # EOF ends the session
        assert chat.wait(30) == 0  # stopping an answer is not a failure
    finally:
        if chat.poll() is None:
            chat.kill()
    assert cancelled_so_far(url) == before + 2
    conversations = httpx.get(f"{url}/api/conversations", timeout=30).json()["conversations"]
    assert len(conversations) == conversations_before + 1  # both messages in one conversation


def test_ctrl_c_on_one_message_cancels_it_and_exits_130(detached: str) -> None:
    url = detached
    before = cancelled_so_far(url)
    chat = subprocess.Popen(
        [PY, "-m", "tokenrelay", "chat", "--url", url, "hi"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = Output(chat.stdout)
    try:
        wait_for(lambda: "Tokens stream" in out.text, timeout=60, what="tokens to arrive")
        chat.send_signal(signal.SIGINT)
        assert chat.wait(30) == 130
        health = httpx.get(f"{url}/api/health", timeout=30).json()
    finally:
        if chat.poll() is None:
            chat.kill()
    assert "[stopped]" in out.text
    assert health["active_runs"] == 0  # cancelled before the CLI exited, not left to the grace period
    assert health["backend_info"]["streams_cancelled"] == before + 1


SCRIPT = {
    "weather?": [
        {"type": "reasoning-delta", "text": "The user wants "},
        {"type": "reasoning-delta", "text": "the weather."},
        {"type": "tool-call-start", "call_id": "call_1", "name": "get_weather"},
        {"type": "tool-call-args-delta", "call_id": "call_1", "delta": '{"city":'},
        {"type": "tool-call-args-delta", "call_id": "call_1", "delta": ' "Paris"}'},
        {"type": "tool-call-result", "call_id": "call_1", "output": "sunny,\n21C"},
        {"type": "tool-call-start", "call_id": "call_2", "name": "get_weather"},
        {"type": "tool-call-args-delta", "call_id": "call_2", "delta": '{"city": "Atlantis"}'},
        {"type": "tool-call-result", "call_id": "call_2", "output": "no such city", "is_error": True},
        {"type": "text-delta", "text": "It is sunny "},
        {"type": "text-delta", "text": "in Paris."},
        {"type": "finish", "reason": "stop"},
    ],
    "long": [{"type": "text-delta", "text": "Once upon a"}, {"type": "finish", "reason": "length"}],
    "fail": [{"type": "text-delta", "text": "Hm"}, {"error": {"code": "model_error", "message": "it broke"}}],
    "*": [{"type": "text-delta", "text": "Hello!"}, {"type": "finish", "reason": "stop"}],
}

WEATHER = """[thinking] The user wants the weather.
[tool get_weather {"city": "Paris"}]
[tool get_weather -> sunny, 21C]
[tool get_weather {"city": "Atlantis"}]
[tool get_weather failed: no such city]
It is sunny in Paris.
"""


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server replaying SCRIPT."""
    where = tmp_path_factory.mktemp("cli")
    (where / "script.json").write_text(json.dumps(SCRIPT))
    with module_server(where, "--synthetic-script", str(where / "script.json")) as url:
        yield url


def run_chat(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "tokenrelay", "chat", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        input=stdin,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
    )


def test_chat_shows_reasoning_and_tool_calls_around_the_answer(scripted: str) -> None:
    out = run_chat(scripted, "weather?")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == WEATHER  # not a terminal: no ANSI codes, the same brackets


def test_chat_says_when_the_answer_was_cut_at_the_length_limit(scripted: str) -> None:
    out = run_chat(scripted, "long")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == "Once upon a\n[cut at the length limit]\n"


def test_chat_exits_1_when_the_run_failed(scripted: str) -> None:
    out = run_chat(scripted, "fail")
    assert out.returncode == 1
    assert out.stdout == "Hm\n"
    assert out.stderr == "tokenrelay: the run failed: model_error: it broke\n"


def test_a_session_with_a_failed_run_exits_1_after_going_on(scripted: str) -> None:
    out = run_chat(scripted, stdin="fail\nhi\n")
    assert out.returncode == 1
    assert out.stdout == "> Hm\n> Hello!\n> \n"  # the failure did not end the session
    assert out.stderr == "tokenrelay: the run failed: model_error: it broke\n"


def on_terminal(url: str, *, no_color: bool = False) -> str:
    """What ``tokenrelay chat "weather?"`` writes when its stdout is a terminal (a pseudo-terminal here)."""
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    proc = subprocess.Popen(
        [PY, "-m", "tokenrelay", "chat", "--url", url, "weather?"], stdout=child, stderr=subprocess.PIPE, env=env
    )
    os.close(child)
    out = Output(os.fdopen(main, "rb"))
    assert proc.wait(30) == 0
    wait_for(lambda: "in Paris." in out.text, timeout=30, what="the answer on the terminal")
    return out.text


def test_on_a_terminal_reasoning_and_tools_are_dimmed_and_the_answer_is_not(scripted: str) -> None:
    lines = on_terminal(scripted).split("\r\n")
    assert lines[0] == f"{DIM}[thinking] {RESET}{DIM}The user wants {RESET}{DIM}the weather.{RESET}"
    assert lines[1] == f'{DIM}[tool get_weather {{"city": "Paris"}}]{RESET}'
    assert lines[5] == "It is sunny in Paris."  # the answer itself is never dimmed


def test_no_color_turns_the_styles_off_on_a_terminal_too(scripted: str) -> None:
    assert on_terminal(scripted, no_color=True).replace("\r\n", "\n") == WEATHER


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


async def test_a_stream_that_cannot_be_completed_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    async def cut(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # the resume: the run is gone (an expired run, a restarted instance)
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"text/event-stream"), (b"x-run-id", b"r1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'id: 1\ndata: {"delta": "par"}\n\n', "more_body": True})
        await send({"type": "http.response.body", "body": b""})  # closed before the done frame

    async with running_server(cut, lifespan="off") as url:
        status = await asyncio.to_thread(main, ["chat", "--url", url, "hi"])
    out = capsys.readouterr()
    assert status == 1
    assert out.out == "par\n"
    assert out.err == "tokenrelay: the stream ended before its done frame (last event id 1)\n"
