"""python -m bench: the benchmarks (issues 7 and 15). They print figures; they never pass or fail.

`make bench` runs every figure of issue 15's table REPEATS times, each beside its yardstick
measured in the same run (the naive distributor, a bare framed echo, a bare broadcaster),
and prints min / median / max and the ratios, in under 15 minutes on 2 CPUs. It writes
bench/results/<UTC date-time>.json (every raw run, and the table) and a PNG beside it;
`--baseline` also writes them as bench/baseline.json and bench/storm.png, the README's.
`--smoke` is a tiny version for CI (N up to 50, one run of each, a few seconds) that writes
to a temp dir, or to `--out`.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import (
    consul_watch,
    detection,
    gateway,
    memory,
    messaging,
    onejoin,
    propagation,
    report,
    storm,
)
from bench import dns as dns_bench
from bench.procs import load_pinned, settle
from harness.procs import ROOT, raise_nofile
from shared import log as mesh_log

PACKAGES = ("uvloop", "orjson", "structlog", "aiohttp", "matplotlib")
REPEATS = 3


def plan(smoke: bool, budget: float | None, repeats: int | None) -> dict[str, Any]:
    """What this run measures, and how often: recorded in its JSON."""
    if smoke:
        return {
            "repeats": repeats or 1,
            "storm_sizes": [20, 50],
            "storm_rows": [20, 50],
            "storm_budget_s": budget or 20.0,
            "bytes_n": 50,
            "propagation_clients": 50,
            "propagation_trials": 3,
            "messaging_seconds": 0.3,
            "one_join_n": 50,
            "one_join_trials": 3,
            "dns_seconds": 0.5,
            "consul_watchers": 50,
            "consul_changes": 3,
        }
    return {
        "repeats": repeats or REPEATS,
        "storm_sizes": [50, 100, 200, 400, 1000, 2000, 5000, 10000],
        "storm_rows": [400, 1000, 5000, 10000],
        "storm_budget_s": budget or 60.0,
        "bytes_n": 1000,
        "propagation_clients": 50,  # the joiner or leaver, and the 49 that hear of it
        "propagation_trials": 20,
        "messaging_seconds": 3.0,
        "one_join_n": 10000,
        "one_join_trials": 5,  # joins to the same n connected nodes: connecting them is the cost
        "dns_seconds": 3.0,  # each run of queries at the node and at the bare responder
        "consul_watchers": 1000,  # blocking health queries on one service (issue 21)
        "consul_changes": 10,
    }


def machine(smoke: bool, nofile: int) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "nofile": nofile,
        "smoke": smoke,
    }


def storm_rounds(
    sizes: list[int], budget: float, repeats: int, profile_dir: Path | None
) -> list[dict[str, Any]]:
    """Every size `repeats` times, in rounds: a slow spell of the machine then costs one run
    of several sizes, not every run of one. The naive distributor and the profiles are in
    the first round only; a size that did not complete is not run again."""
    entries: list[dict[str, Any]] = []
    for round_number in range(1, repeats + 1):
        first = round_number == 1
        print(f"storm round {round_number}/{repeats}: N in {sizes}, {budget:g} s each", flush=True)
        measured = storm.run(
            sizes,
            budget,
            naive_max=storm.NAIVE_MAX if first else 0,
            profile_dir=profile_dir if first else None,
        )
        entries += [{**entry, "round": round_number} for entry in measured]
        sizes = [e["n"] for e in measured if e["mode"] == "delta" and e["completed"]]
        if not sizes:
            break
    return entries


def propagation_runs(clients: int, trials: int, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """The distributor and the bare broadcaster in turns, trial by trial (bench/propagation.py),
    so each pair shares the machine's mood."""
    runs: dict[str, list[dict[str, Any]]] = {"distributor": [], "broadcaster": []}
    for _ in range(repeats):
        for server, figures in propagation.run_pair(clients, trials).items():
            runs[server].append(figures)
    return runs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves it works")
    parser.add_argument("--out", type=Path, help="directory for the JSON and PNG")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also write bench/baseline.json and bench/storm.png (the README's figures)",
    )
    parser.add_argument("--budget", type=float, help="seconds each storm may take (60)")
    parser.add_argument(
        "--repeats", type=int, help=f"runs of each figure ({REPEATS}; 1 in --smoke)"
    )
    parser.add_argument(
        "--detection-trials",
        type=int,
        help="trials per fault of the container detection benchmark (20; 0 skips it; "
        "never in --smoke: it needs the image `make setup` builds)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run each storm's distributor of the first round under cProfile, stats here",
    )
    args = parser.parse_args(argv)
    mesh_log.configure("warning")  # the in-process node of the messaging run stays quiet
    nofile = raise_nofile()
    smoke = args.smoke
    run_plan = plan(smoke, args.budget, args.repeats)
    repeats = run_plan["repeats"]
    if args.out is not None:
        out = args.out
    elif smoke:
        out = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    else:
        out = ROOT / "bench" / "results"
    started = time.monotonic()
    sections: dict[str, float] = {}  # name: when it started

    def section(name: str, title: str) -> None:
        # what the last section left the kernel to do is not this one's (a smoke run
        # measures nothing worth the wait)
        waited = 0.0 if smoke else settle()
        sections[name] = time.monotonic()
        settled = f" (after {waited:.1f} s for the CPUs to settle)" if waited > 1 else ""
        print(title + settled, flush=True)

    section("storm", "storm")
    storm_results = storm_rounds(
        run_plan["storm_sizes"], run_plan["storm_budget_s"], repeats, args.profile
    )
    # the load on the last CPU, the servers under test on the others (bench/procs.py)
    with load_pinned():
        section("propagation", "propagation (the distributor and the bare broadcaster in turn)")
        prop = propagation_runs(
            run_plan["propagation_clients"], run_plan["propagation_trials"], repeats
        )
        section("messaging", "messaging")
        msg = [messaging.run(run_plan["messaging_seconds"]) for _ in range(repeats)]
    section("memory", "memory")
    mem = [memory.run(smoke) for _ in range(repeats)]
    section("one_join", f"one join reaching all of {run_plan['one_join_n']:,} connected nodes")
    one_join = onejoin.run(run_plan["one_join_n"], run_plan["one_join_trials"])
    section(
        "gateway", "gateway: the Node.js app directly, through HAProxy 2.6, through the gateway"
    )
    gateway_results = gateway.run(smoke, repeats)
    section("dns", "dns: SRV queries/s, a node and a bare dnspython responder in turn")
    dns_result = dns_bench.run(run_plan["dns_seconds"], repeats)
    section("consul_watch", "consul blocking queries (watchers of a; a and b change)")
    consul = consul_watch.run(run_plan["consul_watchers"], run_plan["consul_changes"])
    trials = 0 if smoke else args.detection_trials if args.detection_trials is not None else 20
    detected = None
    if trials:
        section("detection", "detection (containers)")
        detected = detection.measure(trials)
    ended = time.monotonic()
    spans = itertools.pairwise([*sections.values(), ended])
    results: dict[str, Any] = {
        "machine": machine(smoke, nofile),
        "plan": run_plan,
        "seconds": round(ended - started),
        "section_seconds": {
            name: round(end - start) for name, (start, end) in zip(sections, spans, strict=True)
        },
        "storm": storm_results,
        "propagation": prop,
        "messaging": msg,
        "memory": mem,
        "one_join": one_join,
        "gateway": gateway_results,
        "dns": dns_result,
        "consul_watch": consul,
    }
    if detected is not None:
        results["detection"] = detected
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    json_path = out / f"{stamp}.json"
    report.write(results, json_path, json_path.with_suffix(".png"))
    written = [json_path, json_path.with_suffix(".png")]
    if args.baseline:
        report.write(results, ROOT / "bench" / "baseline.json", ROOT / "bench" / "storm.png")
        written += [ROOT / "bench" / "baseline.json", ROOT / "bench" / "storm.png"]
    print()
    print(report.text(results))
    print(dns_bench.text(dns_result))
    print(consul_watch.row(consul))
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    each = ", ".join(f"{name} {s} s" for name, s in results["section_seconds"].items())
    print(f"total {time.monotonic() - started:.0f} s ({each})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
