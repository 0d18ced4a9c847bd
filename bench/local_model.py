"""The embedded model: tokens per second at an HTTP client of ``tokenrelay serve`` vs llama.cpp in-process.

Both sides run the same GGUF with the same prompt, system prompt, sampling (greedy: temperature 0, fixed seed) and
thread count, so they generate the same tokens; each rate is tokens / (request to last token), prompt included.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from typing import Any

from bench.servers import HOST, Server

PROMPT = "Write a long story about a lighthouse keeper and a storm."
SYSTEM = "You are a helpful assistant. Answer briefly and clearly."
SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.2, "seed": 1}


def _load(n_threads: int) -> Any:
    from llama_cpp import Llama

    from tokenrelay.backends.local import default_model_path

    return Llama(model_path=str(default_model_path()), n_ctx=2048, n_threads=n_threads, seed=1, verbose=False)


def in_process(llm: Any, max_tokens: int) -> tuple[float, int]:
    """llama.cpp's own rate: tokens / (call to last token), streaming, in this process."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    t0 = time.perf_counter()
    last, tokens = t0, 0
    for chunk in llm.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens, **SAMPLING):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
            last = time.perf_counter()
    return tokens / (last - t0), tokens


def over_http(port: int) -> tuple[float, int]:
    """The rate an HTTP client of ``tokenrelay serve`` sees: tokens / (request to last delta)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    t0 = time.perf_counter()
    conn.request("POST", "/api/chat/stream", json.dumps({"message": PROMPT}), {"content-type": "application/json"})
    response = conn.getresponse()
    last, tokens = t0, 0
    while line := response.readline():
        if line.startswith(b'data: {"delta"'):
            last = time.perf_counter()
        elif line.startswith(b'data: {"done"'):
            tokens = json.loads(line[6:])["usage"]["output_tokens"]
            break
    conn.close()
    return tokens / (last - t0), tokens


class _LocalPeer:
    name = "tokenrelay-local"
    label = "tokenrelay (local model)"
    module = None

    def command(
        self, port: int, *, tokens: int, interval_ms: float, delay_ms: float = 0, extra: tuple[str, ...] = ()
    ) -> list[str]:
        import sys

        return [sys.executable, "-m", "tokenrelay", "serve", "--host", HOST, "--port", str(port), *extra]

    def path(self, *, tokens: int, interval_ms: float, delay_ms: float = 0) -> str:
        return "/api/chat/stream"


_TOKENRELAY_LOCAL: Any = _LocalPeer()


def measure(max_tokens: int, repeats: int, n_threads: int = 1) -> dict[str, Any]:
    """Both sides loaded at once and run in turns (A, B, A, B...), so a noisy neighbour hits both alike."""
    extra = (
        *("--backend", "local", "--history", "memory", "--max-tokens", str(max_tokens)),
        *("--temperature", "0", "--seed", "1", "--n-threads", str(n_threads)),
    )
    llm = _load(n_threads)
    direct: list[tuple[float, int]] = []
    served: list[tuple[float, int]] = []
    with Server(_TOKENRELAY_LOCAL, tokens=0, interval_ms=0, extra=extra, cpus=None, ready_timeout=180) as server:
        in_process(llm, max_tokens)  # warm-up, not counted
        over_http(server.port)
        for _ in range(repeats):
            direct.append(in_process(llm, max_tokens))
            served.append(over_http(server.port))
    rate_direct = statistics.median(r for r, _ in direct)
    rate_served = statistics.median(r for r, _ in served)
    return {
        "in_process_tokens_s": rate_direct,
        "client_tokens_s": rate_served,
        "tokens": statistics.median(n for _, n in served),
        "in_process_tokens": statistics.median(n for _, n in direct),
        "ratio": rate_served / rate_direct,
        "n_threads": n_threads,
    }
