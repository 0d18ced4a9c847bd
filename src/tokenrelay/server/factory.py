"""Build the configured backend. Heavy backends are imported only when chosen."""

from __future__ import annotations

from tokenrelay.backends.base import Backend
from tokenrelay.server.settings import Settings

__all__ = ["build_backend"]


def build_backend(settings: Settings) -> Backend:
    if settings.backend == "synthetic":
        from tokenrelay.backends.synthetic import SyntheticBackend

        return SyntheticBackend(
            tokens=settings.synthetic_tokens,
            interval_ms=settings.synthetic_interval_ms,
            token=settings.synthetic_token,
            text=settings.synthetic_text,
            fail_after=settings.synthetic_fail_after,
            initial_delay_ms=settings.synthetic_initial_delay_ms,
        )
    if settings.backend == "local":
        from tokenrelay.backends.local import LocalBackend

        return LocalBackend(
            model_path=settings.model_path,
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            repeat_penalty=settings.repeat_penalty,
            seed=settings.seed,
            system_prompt=settings.system_prompt,
            max_queue=settings.max_queue,
        )
    raise ValueError(f"unknown backend {settings.backend!r}")
