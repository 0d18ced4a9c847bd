"""``python -m bench.observers``: what a run observer costs, in CPU time per run, on the run manager alone.

Runs of 200 text deltas from a scripted backend into the memory store, 50 at a time, no viewers: the run's own
path (start, drive, record the end) and nothing else. Best of 9 rounds of 400 runs, in process CPU time (the
machine's other load moves wall-clock times more than the observers do). Cases: no observer, the run log line
(INFO on, to a NullHandler), and tracing (the OpenTelemetry SDK, recording spans, no exporter: needs the SDK).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tokenrelay.backends import ScriptedBackend
from tokenrelay.events import FinishEvent, TextDelta, UsageEvent
from tokenrelay.observability import RunLog
from tokenrelay.runs import RunManager
from tokenrelay.runs.observer import Observers, RunObserver
from tokenrelay.stores import MemoryRunStore

TOKENS, RUNS, BATCH, ROUNDS = 200, 400, 50, 9


async def _round(observer: RunObserver | None) -> float:
    script = [*(TextDelta("x") for _ in range(TOKENS)), UsageEvent(1, TOKENS), FinishEvent("stop")]
    manager = RunManager(ScriptedBackend(script), MemoryRunStore(), observer=observer)
    start = time.process_time()
    for _ in range(RUNS // BATCH):
        infos = [await manager.start([], user_id="u", conversation_id="c") for _ in range(BATCH)]
        for info in infos:
            await manager.wait(info.run_id)
    return time.process_time() - start


def _tracing() -> RunObserver:
    from opentelemetry.sdk.trace import TracerProvider

    from tokenrelay.observability.tracing import Tracing

    return Tracing("scripted", tracer_provider=TracerProvider())


async def main() -> None:
    root = logging.getLogger()
    root.addHandler(logging.NullHandler())
    cases: dict[str, tuple[Callable[[], RunObserver | None], int]] = {
        "no observer": (lambda: None, logging.WARNING),
        "run log line": (lambda: Observers([RunLog()]), logging.INFO),
        "tracing (SDK, no exporter)": (_tracing, logging.WARNING),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(ROUNDS):
        for name, (make, level) in cases.items():
            root.setLevel(level)
            best[name] = min(best[name], await _round(make()))
    root.setLevel(logging.WARNING)
    base = best["no observer"] / RUNS
    for name, seconds in best.items():
        per_run = seconds / RUNS
        print(f"{name:28s} {RUNS / seconds:7.0f} runs/s  {per_run * 1e6:6.1f} µs/run  (+{(per_run - base) * 1e6:.1f})")


if __name__ == "__main__":
    asyncio.run(main())
