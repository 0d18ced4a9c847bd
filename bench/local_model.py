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


def in_process(max_tokens: int, repeats: int, n_threads: int) -> dict[str, float]:
    from llama_cpp import Llama

    from tokenrelay.backends.local import default_model_path

    llm = Llama(model_path=str(default_model_path()), n_ctx=2048, n_threads=n_threads, seed=1, verbose=False)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    rates, counts = [], []
    for _ in range(repeats + 1):  # the first run warms the caches and is not counted
        t0 = time.perf_counter()
        last, tokens = t0, 0
        for chunk in llm.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens, **SAMPLING):
            if chunk["choices"][0]["delta"].get("content"):
                tokens += 1
                last = time.perf_counter()
        rates.append(tokens / (last - t0))
        counts.append(tokens)
    del llm
    return {"tokens_s": statistics.median(rates[1:]), "tokens": statistics.median(counts[1:])}


def over_http(max_tokens: int, repeats: int, n_threads: int) -> dict[str, float]:
    extra = (
        *("--backend", "local", "--history", "memory", "--max-tokens", str(max_tokens)),
        *("--temperature", "0", "--seed", "1", "--n-threads", str(n_threads)),
    )
    rates, counts = [], []
    with Server(_TOKENRELAY_LOCAL, tokens=0, interval_ms=0, extra=extra, cpus=None, ready_timeout=180) as server:
        for _ in range(repeats + 1):
            conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
            body = json.dumps({"message": PROMPT})
            t0 = time.perf_counter()
            conn.request("POST", "/api/chat/stream", body, {"content-type": "application/json"})
            response = conn.getresponse()
            last, tokens = t0, 0
            while line := response.readline():
                if line.startswith(b'data: {"delta"'):
                    last = time.perf_counter()
                elif line.startswith(b'data: {"done"'):
                    tokens = json.loads(line[6:])["usage"]["output_tokens"]
                    break
            conn.close()
            rates.append(tokens / (last - t0))
            counts.append(tokens)
    return {"tokens_s": statistics.median(rates[1:]), "tokens": statistics.median(counts[1:])}


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


def measure(max_tokens: int, repeats: int, n_threads: int = 2) -> dict[str, Any]:
    direct = in_process(max_tokens, repeats, n_threads)
    served = over_http(max_tokens, repeats, n_threads)
    return {
        "in_process_tokens_s": direct["tokens_s"],
        "client_tokens_s": served["tokens_s"],
        "tokens": served["tokens"],
        "in_process_tokens": direct["tokens"],
        "ratio": served["tokens_s"] / direct["tokens_s"],
    }
