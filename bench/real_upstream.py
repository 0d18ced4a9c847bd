"""Concurrent streams through a real (fake) upstream: ``C`` streams at 50 tokens/s each, relayed from the fake
OpenAI-compatible server (bench/upstream.py, paced mode) by each relay in turn.

Layout: the relay under test on core 0 (one process), the fake upstream and the load client on core 1. Every relay
is asked the same: the same chunks (``fake-<chunks>-<interval_ms>-<delay_ms>``, a few different tokens in turn, one
HTTP chunk each), the same start delay, the same window. Per relay: tokens delivered / asked in the window, the gap
between a stream's tokens at the client (p50/p99), the relay's RSS per stream, and its CPU and the upstream's.

The relays: tokenrelay (``serve --backend openai``) with ``--history memory`` and with the default SQLite history,
the seed's recipe (``StreamingResponse`` over the OpenAI SDK's stream), a plain httpx + ``json`` relay (the floor),
and LiteLLM's proxy where a ``litellm`` command is installed (``BENCH_LITELLM`` names it; it is not a dependency).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.servers import CLIENT_CPU, HOST, SERVER_CPU, UVICORN, CpuSampler, Peer
from bench.suite import INTERVAL_MS, RATE, Plan, load, log, log_load


def model_name(tokens: int, interval_ms: float, delay_ms: float) -> str:
    """What the fake upstream reads its pacing from."""
    return f"fake-{tokens}-{interval_ms:g}-{delay_ms:g}"


@dataclass(frozen=True)
class Relay(Peer):
    """A server that relays the fake upstream: tokenrelay, a uvicorn app from bench.peers, or LiteLLM's proxy."""

    kind: str = "peer"  # "tokenrelay", "peer" or "litellm"
    base_url: str = ""  # the fake upstream's, set once it runs
    history: str = "memory"  # tokenrelay only: "memory" or a SQLAlchemy URL

    def command(
        self, port: int, *, tokens: int, interval_ms: float, delay_ms: float = 0, extra: tuple[str, ...] = ()
    ) -> list[str]:
        if self.kind == "tokenrelay":
            history = ("--history", "memory") if self.history == "memory" else ("--database-url", self.history)
            return [
                sys.executable,
                *("-m", "tokenrelay", "serve", "--backend", "openai", "--base-url", self.base_url),
                *("--model", model_name(tokens, interval_ms, delay_ms), "--api-key", "bench"),
                *("--host", HOST, "--port", str(port), "--log-level", "warning", "--max-active-runs", "100000"),
                *history,
                *extra,
            ]
        if self.kind == "litellm":
            return [*extra, "--host", HOST, "--port", str(port), "--num_workers", "1"]
        return [sys.executable, "-m", "uvicorn", str(self.module), "--host", HOST, "--port", str(port), *UVICORN]

    def path(self, *, tokens: int, interval_ms: float, delay_ms: float = 0) -> str:
        if self.kind == "tokenrelay":
            return "/api/chat/stream?message=hi"
        if self.kind == "litellm":
            return "/v1/chat/completions"
        return f"/stream?model={model_name(tokens, interval_ms, delay_ms)}&base_url={quote(self.base_url, safe='')}"


RELAYS = {
    r.name: r
    for r in (
        Relay("tokenrelay", "tokenrelay, --history memory", None, kind="tokenrelay"),
        Relay("tokenrelay-sqlite", "tokenrelay, default SQLite history", None, kind="tokenrelay", history="sqlite"),
        Relay("seed-sdk", "seed recipe over the OpenAI SDK", "bench.peers.seed_sdk:app"),
        Relay("httpx", "plain httpx + json relay (floor)", "bench.peers.httpx_relay:app"),
        Relay("litellm", "LiteLLM proxy, 1 worker", None, kind="litellm"),
    )
}


def litellm_command() -> list[str] | None:
    """The ``litellm`` proxy command, from ``BENCH_LITELLM`` or the PATH; None where it is not installed."""
    found = os.environ.get("BENCH_LITELLM") or shutil.which("litellm")
    return [found] if found and Path(found).exists() else None


def _litellm_config(tmp: str, base_url: str) -> list[str]:
    config = Path(tmp) / "litellm.yaml"
    # Every model name goes to the fake upstream as it is, so the pacing in the name reaches it.
    config.write_text(
        "model_list:\n  - model_name: '*'\n    litellm_params:\n"
        f"      model: 'openai/*'\n      api_base: '{base_url}'\n      api_key: 'bench'\n"
    )
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # No master key: the proxy listens on loopback for the benchmark only, and the client sends no credentials.
    os.environ.setdefault("LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY", "true")
    return ["--config", str(config)]


def _measure(relay: Relay, streams: int, plan: Plan, upstream: CpuSampler, tmp: str) -> dict[str, Any]:
    delay_ms = plan.start_delay_ms(streams)
    request: dict[str, Any] = {}
    extra: tuple[str, ...] = ()
    if relay.kind == "litellm":
        command = litellm_command()
        assert command is not None
        extra = (*command, *_litellm_config(tmp, relay.base_url))
        model = model_name(plan.stream_tokens(delay_ms), INTERVAL_MS, delay_ms)
        request = {"body": {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}}
    if relay.history == "sqlite":
        db = Path(tmp) / f"history-{streams}.db"
        relay = dataclasses.replace(relay, history=f"sqlite+aiosqlite:///{db}")
    with upstream.running():
        result = load(relay, streams, plan, extra=extra, request=request)
    result["upstream_cpu"] = upstream.share(*result["window_wall"])
    upstream.samples.clear()
    return result


def concurrent(plan: Plan, relays: tuple[str, ...]) -> dict[str, Any]:
    """Every relay at every stream count of ``plan.upstream_streams``, one fresh relay process per measurement."""
    from bench.upstream import fake_upstream_process

    out: dict[str, Any] = {"layout": layout(), "relays": {}, "skipped": {}}
    if "litellm" in relays and litellm_command() is None:
        out["skipped"]["litellm"] = "no litellm command (pip install 'litellm[proxy]', or set BENCH_LITELLM)"
        relays = tuple(r for r in relays if r != "litellm")
    with fake_upstream_process() as (url, pid), tempfile.TemporaryDirectory() as tmp:
        sampler = CpuSampler(pid)
        for name in relays:
            relay = dataclasses.replace(RELAYS[name], base_url=url)
            entry: dict[str, Any] = {"label": relay.label, "load": {}}
            out["relays"][name] = entry
            for count in plan.upstream_streams:
                log(f"real upstream, {name}: {count} streams x {RATE} tokens/s for {plan.window_s:g} s")
                try:
                    r = _measure(relay, count, plan, sampler, tmp)
                except Exception as exc:  # one relay failing to start does not void the others' figures
                    entry["load"][count] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[-300:]}"}
                    log(f"  failed: {entry['load'][count]['error']}")
                    continue
                entry["load"][count] = r
                log_load(r)
    return out


def layout() -> str:
    cores = os.cpu_count() or 1
    return (
        f"relay under test on core {min(SERVER_CPU)} (taskset, one process); fake upstream and load client on core "
        f"{min(CLIENT_CPU)}; {cores} cores, load average {os.getloadavg()[0]:.1f} at start"
    )


def _cell(r: dict[str, Any], floor: dict[str, Any] | None) -> str:
    from bench.report import _f, _pct, _ratio

    if "error" in r:
        return f"failed: {r['error']} | | | | | | | | |"
    base = floor if floor and "error" not in floor else {}
    flag = "" if r["connected"] == r["streams"] and not r["failed"] else f" ({r['connected']} connected)"
    return (
        f"{flag} | {_f(r['share'] * 100, 1)}% | {_ratio(r['share'], base.get('share'))} "
        f"| {_f(r['gap_p50_ms'], 1, ' ms')} | {_f(r['gap_p99_ms'], 1, ' ms')} | {_f(r['rss_kb_per_stream'], 1, ' KB')} "
        f"| {_ratio(r['rss_kb_per_stream'], base.get('rss_kb_per_stream'))} | {_pct(r.get('server_cpu'))} "
        f"| {_pct(r.get('upstream_cpu'))} | {_pct(r['client_cpu'])} |"
    )


def table(results: dict[str, Any], rate: int = RATE, window_s: float = 0) -> str:
    """The concurrent real-upstream table (Markdown), ratios against the plain httpx relay, then the targets."""
    floor = results["relays"].get("httpx", {}).get("load", {})
    rows = [
        f"**Concurrent streams through a real upstream** ({rate} tokens/s each, {window_s:g} s window; "
        "gap p50 is the median gap between a stream's tokens at the client; ratios are against the plain httpx relay)",
        "",
        f"Layout: {results['layout']}",
        "",
        "| relay | streams | delivered | vs floor | gap p50 | gap p99 | RSS/stream | vs floor | relay CPU "
        "| upstream CPU | client CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for entry in results["relays"].values():
        for count, r in entry["load"].items():
            rows.append(f"| {entry['label']} | {int(count):,}{_cell(r, floor.get(count))}")
    for name, why in results.get("skipped", {}).items():
        rows += ["", f"{name}: skipped — {why}"]
    rows += ["", "| target (tokenrelay, default SQLite history) | measured | |", "|---|---|---|"]
    for target, measured, ok in targets(results):
        rows.append(f"| {target} | {measured} | {'met' if ok else 'not measured' if ok is None else '**missed**'} |")
    return "\n".join(rows)


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for tokenrelay with the history users run (SQLite), ``None`` where not run."""
    relays = results["relays"]
    tr = {int(k): v for k, v in relays.get("tokenrelay-sqlite", relays.get("tokenrelay", {})).get("load", {}).items()}
    tr = {k: v for k, v in tr.items() if "error" not in v}
    floor = {int(k): v for k, v in relays.get("httpx", {}).get("load", {}).items() if "error" not in v}
    out: list[tuple[str, str, bool | None]] = []
    r = tr.get(500)
    p99 = r["gap_p99_ms"] if r else None
    ok = r["share"] >= 0.99 and p99 is not None and p99 <= 150 if r else None
    out.append(
        (
            "500 streams: ≥ 99% delivered, p99 gap ≤ 150 ms",
            f"{r['share']:.1%}, p99 {p99:,.0f} ms" if r and p99 is not None else "not run",
            ok,
        )
    )
    r = tr.get(1000)
    out.append(
        ("1,000 streams: ≥ 95% delivered", f"{r['share']:.1%}" if r else "not run", r["share"] >= 0.95 if r else None)
    )
    if tr:
        worst = max(tr, key=lambda k: tr[k]["rss_kb_per_stream"])
        kb = tr[worst]["rss_kb_per_stream"]
        out.append(("≤ 48 KB RSS per stream", f"{kb:.1f} KB (worst, at {worst:,} streams)", kb <= 48))
    both = sorted(set(tr) & set(floor))
    if both:
        ahead = [c for c in both if _ahead(tr[c], floor[c])]
        measured = ", ".join(
            f"{c:,}: {tr[c]['share'] / floor[c]['share']:.2f}×"
            + (
                f" (p99 {tr[c]['gap_p99_ms']:,.0f} vs {floor[c]['gap_p99_ms']:,.0f} ms)"
                if _full(tr[c], floor[c])
                else ""
            )
            for c in both
        )
        out.append(
            ("ahead of the plain httpx relay at every C (delivered, then p99 gap)", measured, len(ahead) == len(both))
        )
    return out


FULL = 0.99
"""Delivered in full: the issue's own bar at 500 streams. The last tokens of a window are still on their way when it
closes, and a relay that lagged delivers more than was asked in the window (its backlog): over 100% is a lag caught
up, not better service."""


def _full(*loads: dict[str, Any]) -> bool:
    return all(r["share"] >= FULL for r in loads)


def _ahead(relay: dict[str, Any], floor: dict[str, Any]) -> bool:
    """``relay`` delivers more than ``floor``, or both deliver in full and ``relay``'s tokens wait no longer (p99)."""
    if _full(relay, floor):
        return bool(relay["gap_p99_ms"] <= floor["gap_p99_ms"])
    return bool(min(relay["share"], 1.0) >= min(floor["share"], 1.0))
