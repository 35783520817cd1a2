"""python -m bench: the benchmarks (issue 7). They print figures; they never pass or fail.

`make bench` runs them in full and writes bench/results/<UTC date-time>.json and a
PNG beside it. `--smoke` is a tiny version for CI (N up to 50, 3 trials, about a
second of messaging) that writes to a temp dir, or to `--out`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import detection, memory, messaging, propagation, report, storm
from harness.procs import ROOT, raise_nofile
from shared import log as mesh_log

SIZES = [50, 100, 200, 400, 1000, 2000, 5000, 10000]
SMOKE_SIZES = [20, 50]
PACKAGES = ("uvloop", "orjson", "structlog", "aiohttp", "matplotlib")


def machine(smoke: bool, nofile: int) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "nofile": nofile,
        "smoke": smoke,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves it works")
    parser.add_argument("--out", type=Path, help="directory for the JSON and PNG")
    parser.add_argument("--budget", type=float, help="seconds each storm size may take (60)")
    parser.add_argument(
        "--detection-trials",
        type=int,
        help="trials per fault of the container detection benchmark (20; 0 skips it; "
        "never in --smoke: it needs the image `make setup` builds)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run each storm's distributor under cProfile, stats here"
    )
    args = parser.parse_args(argv)
    mesh_log.configure("warning")  # the in-process node of the messaging run stays quiet
    nofile = raise_nofile()
    smoke = args.smoke
    sizes = SMOKE_SIZES if smoke else SIZES
    budget = args.budget or (20.0 if smoke else 60.0)
    if args.out is not None:
        out = args.out
    elif smoke:
        out = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    else:
        out = ROOT / "bench" / "results"
    started = time.monotonic()
    print(f"storm: N in {sizes}, {budget:g} s each, naive up to {storm.NAIVE_MAX}", flush=True)
    storm_results = storm.run(
        sizes,
        budget,
        profile_dir=args.profile,
    )
    print("propagation", flush=True)
    prop = propagation.run(50, 3 if smoke else 20)
    print("messaging", flush=True)
    msg = messaging.run(0.3 if smoke else 3.0)
    print("memory", flush=True)
    mem = memory.run()
    results = {
        "machine": machine(smoke, nofile),
        "storm": storm_results,
        "propagation": prop,
        "messaging": msg,
        "memory": mem,
    }
    trials = 0 if smoke else args.detection_trials if args.detection_trials is not None else 20
    if trials:
        print("detection (containers)", flush=True)
        results["detection"] = detection.measure(trials)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    json_path = out / f"{stamp}.json"
    png = report.write(results, json_path)
    print()
    print(report.text(results))
    print(f"\nwrote {json_path} and {png.name} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
