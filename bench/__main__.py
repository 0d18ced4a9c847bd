"""``python -m bench`` (``make bench``): tokenrelay against a bare ASGI loop and three SSE stacks, one table.

Every measurement gets a fresh server process pinned to core 0 (uvicorn, uvloop, httptools, one process) and the
load client (bench/client.py) in its own process on core 1. ``--quick`` is a short run for development.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from bench.real_upstream import RELAYS
from bench.real_upstream import table as real_upstream_table
from bench.report import tables, targets_table
from bench.servers import PEERS
from bench.suite import FULL, QUICK, Plan, log, run

SECTIONS = ("synthetic", "real-upstream", "burst", "workers", "redis", "local")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run: fewer streams, 3 s windows")
    parser.add_argument("--peers", help=f"comma-separated, from {', '.join(PEERS)} (default: all)")
    parser.add_argument("--streams", help="comma-separated stream counts (default 1000,2000,5000,10000)")
    parser.add_argument("--window", type=float, help="seconds of steady state measured per stream count")
    parser.add_argument("--no-local", action="store_true", help="skip the local model")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--sections", help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--upstream-streams", help="stream counts through the real upstream (default 200,500,1000)")
    parser.add_argument("--burst", type=_positive, help="simultaneous run starts in the burst section (default 2000)")
    parser.add_argument(
        "--burst-rounds", type=_positive, help="rounds of the burst section, one burst per history each (default 5)"
    )
    parser.add_argument("--workers", help="worker counts of the workers section (default 1,2)")
    parser.add_argument("--workers-streams", help="synthetic stream counts of the workers section (default 1000,2000)")
    parser.add_argument(
        "--workers-upstream-streams", help="real-upstream stream counts of the workers section (default 200,500)"
    )
    parser.add_argument("--relays", help=f"relays of the real upstream, from {', '.join(RELAYS)} (default: all)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.peers:
        plan = dataclasses.replace(plan, peers=_names(parser, args.peers, PEERS, "peers"))
    if args.streams:
        plan = dataclasses.replace(plan, streams=tuple(int(n) for n in args.streams.split(",")))
    if args.window:
        plan = dataclasses.replace(plan, window_s=args.window)
    if args.no_local:
        plan = dataclasses.replace(plan, local=False)
    plan = _sections(parser, args, plan)
    log(f"plan: {plan}")
    results = run(plan)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    meta = results["meta"]
    print(f"tokenrelay benchmark — {meta['started']}, {meta['machine']}, Python {meta['python']}\n")
    if results["peers"]:
        print(tables(results))
        print()
        print(targets_table(results))
    if "upstream" in results:
        from bench.upstream import table as upstream_table

        print()
        print(upstream_table(results["upstream"]))
    if "real_upstream" in results:
        print()
        print(real_upstream_table(results["real_upstream"], meta["rate"], meta["window_s"]))
    if "workers" in results:
        from bench.workers import table as workers_table

        print()
        print(workers_table(results["workers"], meta["rate"], meta["window_s"]))
    if "burst" in results:
        from bench.burst import table as burst_table

        print()
        print(burst_table(results["burst"]))
    if "redis" in results:
        from bench.redis_throughput import table as redis_table

        print()
        print(redis_table(results["redis"]))
    return 0


def _positive(value: str) -> int:
    """A count option's value: a whole number above zero (else a usage error saying so)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number above zero")
    return number


def _names(parser: argparse.ArgumentParser, value: str, allowed: Iterable[str], what: str) -> tuple[str, ...]:
    """A comma-separated option's names, each one of ``allowed`` (else a usage error naming the unknown ones)."""
    names = tuple(value.split(","))
    unknown = set(names) - set(allowed)
    if unknown:
        parser.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    return names


def _sections(parser: argparse.ArgumentParser, args: argparse.Namespace, plan: Plan) -> Plan:
    """The options that pick what runs: sections, and the real upstream's relays and stream counts."""
    if args.sections:
        plan = dataclasses.replace(plan, sections=_names(parser, args.sections, SECTIONS, "sections"))
    if args.relays:
        plan = dataclasses.replace(plan, upstream_relays=_names(parser, args.relays, RELAYS, "relays"))
    if args.upstream_streams:
        plan = dataclasses.replace(plan, upstream_streams=tuple(int(n) for n in args.upstream_streams.split(",")))
    if args.burst:
        plan = dataclasses.replace(plan, burst_count=args.burst)
    if args.burst_rounds:
        plan = dataclasses.replace(plan, burst_rounds=args.burst_rounds)
    for option in ("workers", "workers_streams", "workers_upstream_streams"):
        if getattr(args, option):
            counts = tuple(int(n) for n in getattr(args, option).split(","))
            plan = dataclasses.replace(plan, **{option: counts})
    return plan


if __name__ == "__main__":
    sys.exit(main())
