"""Failure detection in containers: how long after a fault does everyone see it?

A distributor and 5 nodes (the compose project, through the e2e harness, with the
product's default timings: a heartbeat every 1 s, a 3 s heartbeat timeout). Each trial
hits one node (in turn) with one fault:

- crash: `docker kill` (the kernel closes its sockets: a TCP close);
- freeze: `docker pause` (sockets stay open: only heartbeat silence tells);
- partition: `docker network disconnect` (packets vanish: heartbeat silence again).

The latency is the time from just before the fault's Docker API call until every other
node no longer shows the victim as a `connected` peer (its link is `retrying`, or it is
dropped) and the distributor no longer lists it in /v1/members; "dropped" columns: until
it is gone from every node's members and peers too. Each observer is polled in
its own thread every 10 ms through its port published on 127.0.0.1. After each trial the
fault is healed (start, unpause, connect with the service alias) and the full mesh of 5 is
waited for again. Figures are printed, never asserted; not run in CI.

    .venv/bin/python -m bench.detection --trials 20
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # the e2e harness is a plain module there

from e2e_harness import compose_project  # noqa: E402

NODES = 5
HEARTBEAT_INTERVAL = 1.0  # the product's defaults (docker-compose.yml, DESIGN.md)
HEARTBEAT_TIMEOUT = 3.0
POLL = 0.01
GIVE_UP = 60.0  # a trial whose fault is not seen by then is an error, not a figure
KINDS = ("crash", "freeze", "partition")


def measure(trials: int = 20) -> dict[str, Any]:
    """Runs `trials` trials of each fault; returns the figures (DESIGN.md, "Benchmark
    results", `detection`)."""
    import docker

    client = docker.from_env()
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    drops: dict[str, list[float]] = {kind: [] for kind in KINDS}
    calls: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        with compose_project(
            client,
            lambda *_: None,  # the harness's own figures (compose up, mesh waits) are not ours
            nodes=NODES,
            prefix="mesh-bench",
            MESH_HEARTBEAT_INTERVAL=str(HEARTBEAT_INTERVAL),
            MESH_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
        ) as mesh:
            ids = mesh.wait_for_full_mesh(NODES)
            network = client.networks.get(f"{mesh.project}_mesh")
            for trial in range(trials):
                for kind in KINDS:
                    nodes = mesh.nodes()
                    victim = nodes[trial % len(nodes)]
                    seen, dropped, call = _trial(
                        mesh, network, kind, victim, nodes, ids[victim.container.name]
                    )
                    latencies[kind].append(seen)
                    drops[kind].append(dropped)
                    calls[kind].append(call)
                    ids = mesh.wait_for_full_mesh(NODES)  # healed: whole again
                print(
                    f"trial {trial + 1}/{trials}: "
                    + ", ".join(f"{k} {latencies[k][-1] * 1000:.0f} ms" for k in KINDS),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        client.close()
    result: dict[str, Any] = {
        kind: _summary(latencies[kind], drops[kind], calls[kind]) for kind in KINDS
    }
    result["heartbeat_timeout_ms"] = round(HEARTBEAT_TIMEOUT * 1000)
    result["heartbeat_interval_ms"] = round(HEARTBEAT_INTERVAL * 1000)
    result["nodes"] = NODES
    return result


def _trial(mesh, network, kind: str, victim, nodes, victim_id: str) -> tuple[float, float, float]:
    """One fault on `victim`, healed before returning: seconds until all saw it, until all
    dropped it, and how long the fault's API call took."""
    container = victim.container
    observers = [n for n in nodes if n is not victim]
    stop = threading.Event()  # set when the trial ends early: the pollers give up
    with ThreadPoolExecutor(len(observers) + 1) as pool:
        t0 = time.monotonic()
        if kind == "crash":
            container.kill()
        elif kind == "freeze":
            container.pause()
        else:
            network.disconnect(container)
        call = time.monotonic() - t0
        try:
            waits = [pool.submit(_until_node_sees, n, victim_id, t0, stop) for n in observers]
            waits.append(pool.submit(_until_distributor_drops, mesh, victim_id, t0, stop))
            results = [w.result() for w in waits]
            seen, dropped = max(r[0] for r in results), max(r[1] for r in results)
        finally:
            stop.set()
            if kind == "crash":
                container.start()  # a fresh process, with a new id
            elif kind == "freeze":
                container.unpause()
            else:
                network.connect(container, aliases=["node"])  # its DNS name, as compose gave it
            victim.forget_port()
    return seen, dropped, call


def _until_node_sees(node, victim_id: str, t0: float, stop: threading.Event) -> tuple[float, float]:
    """Seconds from t0 until `node` no longer shows `victim_id` as a connected peer, and
    until it dropped it (absent from its members and peers)."""
    seen = None
    while True:
        try:
            status = node.get("/v1/status", timeout=3)
        except (OSError, ValueError, LookupError):
            status = None  # no answer: nothing seen yet
        now = time.monotonic()
        if status is not None:
            peers = [p for p in status["peers"] if p["id"] == victim_id]
            members = [m for m in status["members"] if m["id"] == victim_id]
            if seen is None and not any(p["state"] == "connected" for p in peers):
                seen = now - t0
            if not peers and not members:
                return seen if seen is not None else now - t0, now - t0
        _give_up_after(now, t0, stop, f"{node.container.name} still lists {victim_id}")


def _until_distributor_drops(
    mesh, victim_id: str, t0: float, stop: threading.Event
) -> tuple[float, float]:
    """Seconds from t0 until the distributor no longer lists `victim_id` (twice: it has no
    link state apart from the list)."""
    while True:
        listed = mesh.member_ids()
        now = time.monotonic()
        if listed is not None and victim_id not in listed:
            return now - t0, now - t0
        _give_up_after(now, t0, stop, f"the distributor still lists {victim_id}")


def _give_up_after(now: float, t0: float, stop: threading.Event, what: str) -> None:
    if now - t0 > GIVE_UP:
        raise TimeoutError(f"after {GIVE_UP:.0f} s {what}")
    if stop.wait(POLL):
        raise RuntimeError(f"the trial ended while {what}")


def _summary(seen: list[float], dropped: list[float], calls: list[float]) -> dict[str, Any]:
    ordered = sorted(seen)
    return {
        "p50_ms": _ms(statistics.median(ordered)),
        "p99_ms": _ms(_p99(ordered)),
        "min_ms": _ms(ordered[0]),
        "max_ms": _ms(ordered[-1]),
        "trials": len(ordered),
        # until absent from every node's members and peers and from the distributor
        "dropped_p50_ms": _ms(statistics.median(dropped)),
        "dropped_p99_ms": _ms(_p99(sorted(dropped))),
        "fault_call_p50_ms": _ms(statistics.median(calls)),
    }


def _p99(ordered: list[float]) -> float:
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]  # nearest rank


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def table(result: dict[str, Any]) -> str:
    rows = [
        f"detection: a distributor and {result['nodes']} nodes in containers, heartbeat "
        f"every {result['heartbeat_interval_ms']} ms, timeout {result['heartbeat_timeout_ms']} ms",
        f"{'fault':<10} {'trials':>6} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8} {'max ms':>8}"
        f" {'dropped p50':>12} {'dropped p99':>12} {'API call p50':>13}",
    ]
    for kind in KINDS:
        r = result[kind]
        rows.append(
            f"{kind:<10} {r['trials']:>6} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
            f" {r['min_ms']:>8.1f} {r['max_ms']:>8.1f} {r['dropped_p50_ms']:>12.1f}"
            f" {r['dropped_p99_ms']:>12.1f} {r['fault_call_p50_ms']:>13.1f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per fault (default 20)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    result = measure(args.trials)
    print(table(result))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
