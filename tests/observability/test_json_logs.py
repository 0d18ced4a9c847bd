"""``--log-format json``: one JSON object per line, with the run's ids on the lines that concern a run."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
from typing import IO, Any

import httpx
import pytest

from tests.conftest import free_port, wait_for
from tokenrelay.observability import JSONFormatter, uvicorn_log_config
from tokenrelay.runs.observer import current_run
from tokenrelay.stores.base import RunInfo

PY = sys.executable


class Lines:
    """Reads a pipe on a thread, line by line."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        assert pipe is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            self.lines.append(raw.decode())

    def join(self) -> None:
        self._thread.join(10)


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        assert line.endswith("\n")
        record = json.loads(line)  # every line is one JSON object, nothing else
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "message"} <= record.keys(), line
        out.append(record)
    return out


def test_serve_logs_json_lines_with_the_runs_ids() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "tokenrelay", "serve", "--backend", "synthetic", "--synthetic-tokens", "3",
         "--synthetic-interval-ms", "1", "--history", "memory", "--port", str(port), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: any("Uvicorn running" in line for line in err.lines) or proc.poll() is not None,
                 timeout=30, what="the server to start")  # fmt: skip
        assert proc.poll() is None, "".join(err.lines)
        body = {"message": "hi", "user_id": "alice"}
        with httpx.stream("POST", f"{url}/api/chat/stream?access_token=s3cret", json=body, timeout=20) as response:
            assert response.status_code == 200
            run_id, conversation_id = response.headers["x-run-id"], response.headers["x-conversation-id"]
            response.read()
        wait_for(lambda: any(run_id in line for line in err.lines), timeout=10, what="the run's line")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    out.join()
    err.join()
    assert proc.returncode == 0
    assert out.lines == []
    records = parsed(err.lines)
    (ended,) = [r for r in records if r.get("run_id") == run_id]
    assert ended["logger"] == "tokenrelay.runs"
    assert ended["level"] == "info"
    assert ended["message"] == f"run {run_id} ended: stop"
    assert ended["user_id"] == "alice"
    assert ended["conversation_id"] == conversation_id
    assert ended["reason"] == "stop"
    assert ended["duration_s"] >= ended["time_to_first_token_s"] >= 0
    assert ended["ts"].endswith("Z")
    (access,) = [r for r in records if r["logger"] == "uvicorn.access"]
    assert access["method"] == "POST"
    assert access["path"] == "/api/chat/stream?access_token=[redacted]"
    assert access["status"] == 200
    assert "s3cret" not in "".join(err.lines)
    assert any(r["logger"] == "tokenrelay.server" and "synthetic backend on" in r["message"] for r in records)
    assert any(r["logger"] == "uvicorn.error" and "Application startup complete" in r["message"] for r in records)


def record(message: str, **extra: Any) -> logging.LogRecord:
    out = logging.LogRecord("tokenrelay.test", logging.WARNING, __file__, 1, message, None, None)
    out.__dict__.update(extra)
    return out


def test_a_record_names_the_run_from_its_extra_or_from_the_running_run() -> None:
    formatter = JSONFormatter()
    plain = json.loads(formatter.format(record("no run")))
    assert plain["message"] == "no run"
    assert plain["level"] == "warning"
    assert "run_id" not in plain

    given = json.loads(formatter.format(record("given", run_id="r1", user_id="u1")))
    assert (given["run_id"], given["user_id"]) == ("r1", "u1")
    assert "conversation_id" not in given

    info = RunInfo(run_id="r2", user_id="u2", conversation_id="c2", backend="x", created_at=0.0)
    token = current_run.set(info)
    try:
        running = json.loads(formatter.format(record("running")))
        overridden = json.loads(formatter.format(record("given", run_id="r9")))
    finally:
        current_run.reset(token)
    assert (running["run_id"], running["user_id"], running["conversation_id"]) == ("r2", "u2", "c2")
    assert overridden["run_id"] == "r9"


def test_an_exception_is_kept_on_its_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = JSONFormatter().format(record("failed", exc_info=sys.exc_info()))
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exc"]


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format: must be text or json"):
        uvicorn_log_config("yaml")


def test_the_log_format_setting_is_checked() -> None:
    from tokenrelay.server import Settings

    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]
