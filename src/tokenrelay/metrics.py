"""Prometheus metrics for one relay: ``GET /metrics``.

Each relay has its own ``CollectorRegistry`` (never the process-wide default), so tests and several apps in one
process do not collide. Nothing here runs per event: the run manager keeps plain integer counts on its hot path
(tokens are counted per write, not per delta), read at scrape time; the histograms get one observation per stream
(time to first token) or per run (duration, outcome).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from tokenrelay.messages import PausedPart

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from tokenrelay.runs import RunManager, RunOutcome

__all__ = ["CONTENT_TYPE", "RelayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From a fast local model (milliseconds) to a remote one behind a queue (tens of seconds).
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _TokensOut(Collector):
    """Reads the run manager's own count at scrape time: the streaming path only adds to an int."""

    def __init__(self, runs: RunManager) -> None:
        self._runs = runs

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("tokenrelay_tokens_out", "Text deltas written to client streams")
        family.add_metric([], self._runs.tokens_out)
        yield family
        resumed = CounterMetricFamily("tokenrelay_runs_resumed", "Paused runs this instance drove on once answered")
        resumed.add_metric([], self._runs.resumed_runs)
        yield resumed


class RelayMetrics:
    """The metrics of one relay's runs and streams."""

    def __init__(self, runs: RunManager, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        active = Gauge("tokenrelay_active_runs", "Runs generating on this instance", registry=r)
        active.set_function(lambda: runs.active_runs)
        viewers = Gauge("tokenrelay_subscribers", "Streams following a run on this instance", registry=r)
        viewers.set_function(lambda: runs.subscribers)
        r.register(_TokensOut(runs))
        self.ttft = Histogram(
            "tokenrelay_time_to_first_token_seconds",
            "From a new stream's start to its first text written",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "tokenrelay_run_duration_seconds",
            "From a run's start to its end, by how it ended",
            ["reason"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.cancellations = Counter("tokenrelay_cancellations", "Runs cancelled (stop, a client leaving)", registry=r)
        self.errors = Counter("tokenrelay_errors", "Runs that ended with an error, by error code", ["code"], registry=r)
        # A pause is not an end: it is counted here, and the run's end once, when it ends (resumed or not).
        self.paused = Counter("tokenrelay_runs_paused", "Runs paused for a tool call's approval", registry=r)
        self._paused = 0
        self._restored = 0  # waiting runs this instance took back from the history (its store had lost them)
        waiting = Gauge(
            "tokenrelay_waiting_runs",
            "Runs waiting for approval: paused here, less those gone on or ended here (sum it over instances)",
            registry=r,
        )
        waiting.set_function(lambda: self._paused + self._restored - runs.resumed_runs - runs.waits_ended)
        runs.first_token_observer = self.ttft.observe

    def run_finished(self, outcome: RunOutcome, started_at: float) -> None:
        """Record a run's end, or its pause for approvals; ``started_at`` is its ``RunInfo.created_at`` (wall
        clock)."""
        if outcome.parts and type(outcome.parts[-1]) is PausedPart:
            self.paused.inc()
            self._paused += 1
            return
        self.run_duration.labels(outcome.reason).observe(max(0.0, time.time() - started_at))
        if outcome.reason == "cancelled":
            self.cancellations.inc()
        if outcome.error is not None:
            self.errors.labels(outcome.error.code).inc()

    def run_restored(self) -> None:
        """A waiting run this instance's store had lost is kept again, rebuilt from the history: it waits here."""
        self._restored += 1

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
