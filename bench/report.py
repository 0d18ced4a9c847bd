"""The benchmark's tables (Markdown, so they paste into the README as they are) and the targets, met or missed."""

from __future__ import annotations

from typing import Any


def _f(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def _ratio(value: float | None, base: float | None) -> str:
    return "–" if value is None or not base else f"{value / base:.2f}×"


def tables(results: dict[str, Any]) -> str:
    peers: dict[str, Any] = results["peers"]
    bare = peers.get("bare", {})
    bare_single = bare.get("single", {}).get("tokens_s")
    bare_ttft = bare.get("ttft", {}).get("ttft_p50_ms")
    out = ["**Single stream** (as fast as it goes; medians) **and time to first token** (idle server)", ""]
    out.append("| server | tokens/s | vs bare | MB/s | writes/s | client CPU | TTFT p50 | vs bare |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|")
    for entry in peers.values():
        s, t = entry["single"], entry["ttft"]
        out.append(
            f"| {entry['label']} | {_f(s['tokens_s'])} | {_ratio(s['tokens_s'], bare_single)} | {_f(s['mb_s'], 2)} "
            f"| {_f(s['reads_s'])} | {_f(s['client_cpu'] * 100)}% | {_f(t['ttft_p50_ms'], 2, ' ms')} "
            f"| {_signed(t['ttft_p50_ms'], bare_ttft)} |"
        )
    ceiling = results.get("ceiling")
    if ceiling:
        out.append(
            f"| *load client's ceiling* | {_f(ceiling['tokens_s'])} | {_ratio(ceiling['tokens_s'], bare_single)} "
            f"| {_f(ceiling['mb_s'], 2)} | {_f(ceiling['reads_s'])} | {_f(ceiling['client_cpu'] * 100)}% | | |"
        )
    sql = results.get("ttft_sql")
    if sql:
        out.append(
            f"| tokenrelay, default SQLite history | | | | | | {_f(sql['ttft_p50_ms'], 2, ' ms')} "
            f"| {_signed(sql['ttft_p50_ms'], bare_ttft)} |"
        )
    meta = results["meta"]
    out += [
        "",
        f"**Concurrent streams** at {meta['rate']} tokens/s each, measured over {meta['window_s']:g} s of steady state",
        "",
        "| server | streams | delivered | vs bare | gap p50 | gap p99 | RSS/stream | server CPU | client CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, entry in peers.items():
        for count, r in entry["load"].items():
            base = bare.get("load", {}).get(count, {}).get("share")
            flag = "" if r["connected"] == r["streams"] and not r["failed"] else f" ({r['connected']} connected)"
            out.append(
                f"| {entry['label']} | {int(count):,}{flag} | {_f(r['share'] * 100, 1)}% "
                f"| {_ratio(r['share'], base) if name != 'bare' else ''} | {_f(r['gap_p50_ms'], 1, ' ms')} "
                f"| {_f(r['gap_p99_ms'], 1, ' ms')} | {_f(r['rss_kb_per_stream'], 1, ' KB')} "
                f"| {_pct(r.get('server_cpu'))} | {_pct(r['client_cpu'])} |"
            )
    local = results.get("local")
    if local:
        out += [
            "",
            f"**Local model** (SmolLM2-135M, llama.cpp, {local.get('n_threads', '?')} thread(s), greedy, same prompt; "
            "request to last token; run in turns)",
            "",
        ]
        if "error" in local:
            out.append(f"not measured: {local['error']}")
        else:
            out += [
                "| llama.cpp in-process | through tokenrelay, at the client | ratio |",
                "|--:|--:|--:|",
                f"| {_f(local['in_process_tokens_s'], 1)} tokens/s | {_f(local['client_tokens_s'], 1)} tokens/s "
                f"| {local['ratio']:.2f} |",
            ]
    return "\n".join(out)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _signed(value: float | None, base: float | None) -> str:
    return "–" if value is None or base is None else f"{value - base:+.2f} ms"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, what was measured, met?) for tokenrelay; ``None`` when not measured."""
    peers = results["peers"]
    tr = peers.get("tokenrelay")
    if tr is None:
        return []
    out: list[tuple[str, str, bool | None]] = []
    loads = {int(k): v for k, v in tr["load"].items()}
    r = loads.get(2000)
    if r is not None:
        ok = r["share"] >= 0.99 and r["gap_p99_ms"] is not None and r["gap_p99_ms"] <= 100
        out.append(
            (
                "2,000 × 50 tok/s: ≥ 99% delivered, p99 gap ≤ 100 ms",
                f"{r['share']:.1%}, p99 {_f(r['gap_p99_ms'], 1)} ms",
                ok,
            )
        )
    else:
        out.append(("2,000 × 50 tok/s: ≥ 99% delivered, p99 gap ≤ 100 ms", "not run", None))
    r = loads.get(10000)
    out.append(
        (
            "10,000 streams: ≥ 95% delivered",
            f"{r['share']:.1%}" if r else "not run",
            r["share"] >= 0.95 if r else None,
        )
    )
    if loads:
        worst = max(v["rss_kb_per_stream"] for v in loads.values())
        at = max(loads, key=lambda k: loads[k]["rss_kb_per_stream"])
        out.append(("≤ 16 KB RSS per stream", f"{worst:.1f} KB (worst, at {at:,} streams)", worst <= 16))
    bare = peers.get("bare")
    if bare:
        ratio = tr["single"]["tokens_s"] / bare["single"]["tokens_s"]
        out.append(("single stream ≥ 0.8× the bare loop", f"{ratio:.2f}×", ratio >= 0.8))
    ttft = tr["ttft"]["ttft_p50_ms"]
    sql = results.get("ttft_sql", {}).get("ttft_p50_ms")
    also = f"; {_f(sql, 2)} ms with the default SQLite history" if sql is not None else ""
    out.append(("≤ 2 ms to first token at low load", f"{_f(ttft, 2)} ms, whole request → first token{also}", ttft <= 2))
    local = results.get("local")
    if local and "ratio" in local:
        out.append(("local model ≥ 90% of llama.cpp in-process", f"{local['ratio']:.0%}", local["ratio"] >= 0.9))
    else:
        out.append(("local model ≥ 90% of llama.cpp in-process", "not run", None))
    return out


def targets_table(results: dict[str, Any]) -> str:
    rows = ["| target (tokenrelay) | measured | |", "|---|---|---|"]
    for target, measured, ok in targets(results):
        rows.append(f"| {target} | {measured} | {'met' if ok else 'not measured' if ok is None else '**missed**'} |")
    ceiling, bare = results.get("ceiling"), results["peers"].get("bare")
    if ceiling and bare:
        ratio = ceiling["tokens_s"] / bare["single"]["tokens_s"]
        busiest = max((r["client_cpu"] for r in bare["load"].values()), default=0.0)
        rows.append(
            f"| the load client is not the bottleneck | counts {ratio:,.0f}× the bare loop's single-stream rate; "
            f"at most {busiest:.0%} of its core against the bare loop "
            f"| {'yes' if ratio > 2 and busiest < 0.9 else '**no**'} |"
        )
    return "\n".join(rows)
