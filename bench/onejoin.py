"""One join reaching n connected nodes: from the joiner's hello to the last of n holding it.

n raw clients join a fresh distributor (a storm, bench/storm.py's workers) and, once
every one holds all n, a joiner dials, sends its hello and stays; each trial is one
more joiner, and ends when every one of the n holds it (workers time each receipt on
the system-wide monotonic clock the joiner's hello was sent by). The sampled clients'
lists (bench/rawclient.py's Sampling) are checked against the distributor's own at the end.

run() returns:
  n                    the connected nodes each join must reach
  trials_ms            per trial, ms from the joiner's hello to the last of n holding it
  ms                   their median
  completed            every trial reached all n, and every list matched the distributor's
  note                 why not, when not
  setup_s              how long the storm that connected the n took
  distributor_cpu_ms   the distributor's user+sys over all the trials, per join
  clients_cpu_s        the client workers' user+sys over all the trials
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import Any

from bench.procs import distributor
from bench.rawclient import HEARTBEAT, hello_frame
from bench.storm import SAMPLE, Workers, members_digest, mismatched
from harness.ports import free_port
from harness.procs import cpu_seconds, raise_nofile

PAUSE = 0.2  # seconds between trials, so each join comes to a quiet distributor


def run(n: int, trials: int = 5, budget: float = 120.0) -> dict[str, Any]:
    """`trials` joins, one at a time, each reaching n connected nodes (module docstring).

    `budget` bounds the storm that connects the n, and each trial.
    """
    raise_nofile()
    port, http_port = free_port(), free_port()
    entry: dict[str, Any] = {"n": n, "trials_ms": [], "ms": None, "completed": False, "note": ""}
    joiners: list[socket.socket] = []
    with (
        distributor(port, http_port, n + trials) as proc,
        Workers(port, n, budget) as workers,
    ):
        try:
            start = workers.start()
            reports = workers.reports()
            if sum(r["done"] for r in reports) < n:
                entry["note"] = f"the storm that connects {n} did not complete in {budget:g} s"
                return entry
            entry["setup_s"] = round(max(r["last"] for r in reports) - start, 2)
            cpu = cpu_seconds(proc.pid), sum(r["cpu"] for r in reports)
            for trial in range(trials):
                time.sleep(PAUSE)
                for joiner in joiners:  # so the distributor keeps them (none reads its own)
                    joiner.sendall(HEARTBEAT)
                workers.expect(n + trial + 1)
                joiner, sent = _join(port, n + trial)
                joiners.append(joiner)
                reports = workers.reports()
                if sum(r["done"] for r in reports) < n:
                    entry["note"] = f"trial {trial}: not every node heard of the join"
                    return entry
                entry["trials_ms"].append(round((max(r["last"] for r in reports) - sent) * 1e3, 2))
            entry["distributor_cpu_ms"] = round((cpu_seconds(proc.pid) - cpu[0]) / trials * 1e3, 2)
            entry["clients_cpu_s"] = round(sum(r["cpu"] for r in reports) - cpu[1], 2)
            checked = sum(r["checked"] for r in reports)
            if mismatched(reports, members_digest(http_port)) or checked < min(n, SAMPLE):
                entry["note"] = "some nodes hold a list unlike the distributor's"
                return entry
        finally:
            for joiner in joiners:
                joiner.close()
    entry["ms"] = statistics.median(entry["trials_ms"])
    entry["completed"] = True
    return entry


def _join(port: int, index: int) -> tuple[socket.socket, float]:
    """A joiner's connection, and the monotonic time its hello was sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    _, hello = hello_frame(index, prefix="j")
    sent = time.monotonic()
    sock.sendall(hello)
    return sock, sent


if __name__ == "__main__":
    import sys

    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
