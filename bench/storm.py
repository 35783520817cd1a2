"""Join storm: N simulated nodes dial one distributor at once; how long until all know all?

The clients live in a few worker processes, each an event loop with thousands of
raw protocol clients (bench/rawclient.py). All start at one monotonic instant
(CLOCK_MONOTONIC is system-wide, so the workers' clocks agree). The figure is the
time until the last client holds all N members, the bytes all clients received,
and the distributor's peak RSS (VmHWM). A point counts only if every client holds N
members and every client that digests its member list (SAMPLE of them picked, the first
and the last to join always among them: rawclient.Sampling) holds the distributor's own,
exactly; the rest count their records and frames, which costs the harness far less.
"""

from __future__ import annotations

import asyncio
import collections
import math
import multiprocessing
import os
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.procs import distributor
from bench.rawclient import Beats, RawClient, Sampling, connect, records_digest
from harness.ports import free_port
from harness.procs import cpu_seconds, raise_nofile, status_mb

CLIENTS_PER_WORKER = 500  # below this one loop keeps up; above, a worker per CPU
SAMPLE = 200  # clients picked to digest their list, the first and the last included
NAIVE_MAX = 400  # the naive mode is measured up to here and modelled beyond


def _worker(
    port: int, first: int, count: int, expect: int, budget: float, conn: Connection
) -> None:
    raise_nofile()
    uvloop.run(_run_worker(port, first, count, expect, budget, conn))


async def _run_worker(
    port: int, first: int, count: int, expect: int, budget: float, conn: Connection
) -> None:
    """Dial at the instant the parent sends, then report each time every client holds
    `expect` members (or the budget ran out); the parent answers with the next count to
    wait for (acknowledged once set), the links all held meanwhile, or "stop"."""
    loop = asyncio.get_running_loop()
    picked, sampling = sample(expect), Sampling(expect)
    clients = [
        RawClient(first + i, expect, sampling=None if first + i in picked else sampling)
        for i in range(count)
    ]
    conn.send("ready")
    start = await loop.run_in_executor(None, conn.recv)  # the shared instant to start at
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    beats = Beats(clients)
    beats.start()
    lag = asyncio.create_task(_sample_lag(stalls := [0.0]))
    dials = [asyncio.create_task(connect(loop, client, port)) for client in clients]
    while True:
        conn.send({**await _phase(clients, start + budget), "lag_max_s": stalls[0]})
        command = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            break
        for client in clients:
            client.expect, client.done_at = command, None
        conn.send("expecting")
        start = time.monotonic()
        stalls[0] = 0.0
    beats.stop()
    lag.cancel()
    for dial in dials:
        dial.cancel()
    for client in clients:
        client.close()
    await asyncio.gather(lag, *dials, return_exceptions=True)
    await asyncio.sleep(0.1)  # let the closes go out


async def _sample_lag(stalls: list[float], interval: float = 0.1) -> None:
    """The longest this worker's loop ran late in a phase, in stalls[0]: a worker late by
    a heartbeat timeout starves its own links' beats, and the distributor rightly drops them."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval)
        stalls[0] = max(stalls[0], time.monotonic() - before - interval)


async def _phase(clients: list[RawClient], deadline: float) -> dict[str, Any]:
    """Until every client holds its expected count (or is closed, or the deadline)."""
    while time.monotonic() < deadline:
        if all(c.done_at is not None or c.closed for c in clients):
            break
        await asyncio.sleep(0.05)
    done = [c.done_at for c in clients if c.done_at is not None]
    joined = [(c.joined_with, bool(c.checked)) for c in clients if c.joined_with is not None]
    errors = [c.error for c in clients if c.error and c.done_at is None]
    return {
        "done": len(done),
        "last": max(done, default=None),
        "bytes": sum(c.received for c in clients),
        "errors": len(errors),
        "error": errors[0] if errors else None,
        # how many of the clients that digest their list hold a list of each digest (one
        # digest, when all is well), and how many digest theirs
        "digests": collections.Counter(
            c.digest.hexdigest() for c in clients if c.done_at is not None and c.checked
        ),
        "checked": sum(1 for c in clients if c.checked),
        # (members in its first snapshot, digested?) of the first and the last to join here
        "first_joined": min(joined, default=None),
        "last_joined": max(joined, default=None),
        "frames": sum(c.frames for c in clients),
        "cpu": time.process_time(),  # this worker's user+sys so far: all its work
    }


class Workers:
    """n raw clients in a few forked worker processes, driven through pipes (_run_worker):
    start() sets them dialling at one instant, reports() waits for each worker's report,
    expect() starts the next phase; leaving the block stops them."""

    def __init__(self, port: int, n: int, budget: float) -> None:
        self.budget = budget
        count = max(1, min(os.cpu_count() or 1, math.ceil(n / CLIENTS_PER_WORKER)))
        ctx = multiprocessing.get_context("fork")
        self._pipes: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for w in range(count):
            first, size = w * n // count, (w + 1) * n // count - w * n // count
            parent, child = ctx.Pipe()
            worker = ctx.Process(target=_worker, args=(port, first, size, n, budget, child))
            worker.start()
            child.close()  # the worker's end only: its death then ends our recv() (EOFError)
            self._pipes.append(parent)
            self._procs.append(worker)

    def __len__(self) -> int:
        return len(self._procs)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            for pipe in self._pipes:
                pipe.send("stop")
        except OSError:  # a worker that died has no one reading
            pass
        for worker in self._procs:
            worker.join(10)
            if worker.is_alive():
                worker.kill()

    def start(self) -> float:
        """Once every worker is ready: the monotonic instant they all dial at."""
        for pipe in self._pipes:
            if not pipe.poll(60):
                raise RuntimeError("a storm worker did not start")
            pipe.recv()  # ready
        start = time.monotonic() + 0.2
        for pipe in self._pipes:
            pipe.send(start)
        return start

    def reports(self) -> list[dict[str, Any]]:
        reports = []
        for pipe in self._pipes:
            if not pipe.poll(self.budget + 30):
                raise RuntimeError("a storm worker did not report")
            reports.append(pipe.recv())
        return reports

    def expect(self, members: int) -> None:
        """The next phase: every client until it holds `members` (set when this returns)."""
        for pipe in self._pipes:
            pipe.send(members)
        for pipe in self._pipes:
            if not pipe.poll(30):
                raise RuntimeError("a storm worker did not answer")
            pipe.recv()


def sample(n: int) -> set[int]:
    """The indices of SAMPLE clients spread evenly over n, the first and the last included
    (every client, up to SAMPLE)."""
    if n <= SAMPLE:
        return set(range(n))
    return {round(k * (n - 1) / (SAMPLE - 1)) for k in range(SAMPLE)}


def run_point(
    n: int,
    mode: str,
    budget: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One storm of n clients against a fresh distributor ("delta") or the naive one.

    With `profile`, the distributor runs under cProfile and writes its stats there.
    """
    raise_nofile()
    port, http_port = free_port(), free_port()
    with (
        distributor(port, http_port, n, mode == "naive", profile) as proc,
        Workers(port, n, budget) as workers,
    ):
        start = workers.start()
        reports = workers.reports()
        peak = status_mb(proc.pid, "VmHWM")
        distributor_cpu = cpu_seconds(proc.pid)
        expected = members_digest(http_port)
    done = sum(r["done"] for r in reports)
    checked = sum(r["checked"] for r in reports)
    wrong = mismatched(reports, expected)
    # the first and the last to join of all the workers' clients digested their lists
    ends = [r[key] for r in reports for key in ("first_joined", "last_joined") if r[key]]
    ends_checked = bool(ends) and min(ends)[1] and max(ends)[1]
    completed = done == n and not wrong and checked >= min(n, SAMPLE) and ends_checked
    last = max((r["last"] for r in reports if r["last"] is not None), default=start)
    entry: dict[str, Any] = {
        "n": n,
        "mode": mode,
        "seconds": round(last - start, 4) if completed else None,
        "bytes_sent": sum(r["bytes"] for r in reports),
        "peak_rss_mb": round(peak, 1),
        "completed": completed,
        "note": "",
        "workers": len(workers),
        # user+sys at the storm's end, to tell a slow distributor from a starved one
        "distributor_cpu_s": round(distributor_cpu, 2),
        "clients_cpu_s": round(sum(r["cpu"] for r in reports), 2),
        "clients_lag_max_s": round(max(r["lag_max_s"] for r in reports), 2),
        # clients that digested their list (each holds the distributor's), of n
        "checked": checked,
        "frames": sum(r["frames"] for r in reports),
    }
    if not completed:
        errors = [r["error"] for r in reports if r["error"]]
        entry["note"] = f"{done}/{n} clients held all members within {budget:g} s" + (
            f"; {sum(r['errors'] for r in reports)} failed, e.g. {errors[0]}" if errors else ""
        )
        if wrong:
            entry["note"] += f"; {wrong} of them hold a list unlike the distributor's"
        if not ends_checked:
            entry["note"] += "; the first or the last to join did not digest its list"
    return entry


def held(reports: list[dict[str, Any]], expected: str) -> int:
    """How many clients that reported done hold the list whose digest is `expected`."""
    return sum(r["digests"][expected] for r in reports)


def mismatched(reports: list[dict[str, Any]], expected: str) -> int:
    """How many of the clients that digested their list hold another than `expected` (the
    others count records and frames only: the sample, rawclient.Sampling, proves the list)."""
    return sum(sum(r["digests"].values()) for r in reports) - held(reports, expected)


def members_digest(http_port: int) -> str:
    """The digest of the distributor's member list (a client holding it has the same)."""
    # a long timeout: the profiled distributor may still be catching up with its links
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/members", timeout=120) as resp:
        return records_digest(orjson.loads(resp.read())["members"])


def naive_model(measured: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """Power laws fitted (least squares in log-log) to the measured naive points, per size."""
    points = [e for e in measured if e["mode"] == "naive" and e["completed"]]
    if len(points) < 2:
        return []
    fits = {key: _fit([(e["n"], e[key]) for e in points]) for key in ("seconds", "bytes_sent")}
    note = "model: " + ", ".join(f"{k} ~ N^{b:.2f}" for k, (_, b) in fits.items())
    top = max(e["n"] for e in points)
    return [
        {
            "n": n,
            "mode": "naive-model",
            "seconds": round(fits["seconds"][0] * n ** fits["seconds"][1], 4),
            "bytes_sent": round(fits["bytes_sent"][0] * n ** fits["bytes_sent"][1]),
            "peak_rss_mb": None,
            "completed": False,
            "note": note,
        }
        for n in sizes
        if n > top
    ]


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(a, b) of y = a * x**b."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1e-9)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return math.exp(my - b * mx), b


def run(
    sizes: list[int],
    budget: float,
    naive_max: int = NAIVE_MAX,
    profile_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Every size in delta mode until one does not complete, the naive mode up to naive_max.

    With `profile_dir`, each distributor's cProfile stats go there as storm-<mode>-<n>.prof.
    """
    results: list[dict[str, Any]] = []
    for mode, limit in (("delta", max(sizes)), ("naive", naive_max)):
        stopped: str | None = None
        for n in (s for s in sizes if s <= limit):
            if stopped is not None:
                results.append(_skipped(n, mode, stopped))
                continue
            profile = profile_dir / f"storm-{mode}-{n}.prof" if profile_dir else None
            try:
                entry = run_point(n, mode, budget, profile)
            except (OSError, RuntimeError) as exc:
                entry = {**_skipped(n, mode, ""), "note": f"could not run: {exc}"}
            results.append(entry)
            print(f"  storm {mode:5} n={n:>5}: {_brief(entry)}", flush=True)
            if not entry["completed"]:
                stopped = f"not run: n={n} did not complete ({entry['note']})"
    results += naive_model(results, sizes)
    return results


def _skipped(n: int, mode: str, note: str) -> dict[str, Any]:
    return {
        "n": n,
        "mode": mode,
        "seconds": None,
        "bytes_sent": 0,
        "peak_rss_mb": None,
        "completed": False,
        "note": note,
    }


def _brief(entry: dict[str, Any]) -> str:
    if entry["completed"]:
        return (
            f"{entry['seconds']:.3f} s, {entry['bytes_sent']:,} B, {entry['peak_rss_mb']} MB, "
            f"CPU s distributor {entry['distributor_cpu_s']}, clients {entry['clients_cpu_s']}"
        )
    return entry["note"]
