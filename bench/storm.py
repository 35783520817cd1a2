"""Join storm: N simulated nodes dial one distributor at once; how long until all know all?

The clients live in a few worker processes, each an event loop with thousands of
raw protocol clients (bench/rawclient.py). All start at one monotonic instant
(CLOCK_MONOTONIC is system-wide, so the workers' clocks agree). The figure is the
time until the last client holds all N members, the bytes all clients received,
and the distributor's peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop

from bench.procs import distributor
from bench.rawclient import RawClient, connect, heartbeats
from harness.ports import free_port
from harness.procs import raise_nofile, status_mb

CLIENTS_PER_WORKER = 500  # below this one loop keeps up; above, a worker per CPU
NAIVE_MAX = 400  # the naive mode is measured up to here and modelled beyond


def _worker(
    port: int, first: int, count: int, expect: int, budget: float, conn: Connection
) -> None:
    raise_nofile()
    uvloop.run(_run_worker(port, first, count, expect, budget, conn))


async def _run_worker(
    port: int, first: int, count: int, expect: int, budget: float, conn: Connection
) -> None:
    loop = asyncio.get_running_loop()
    clients = [RawClient(first + i, expect) for i in range(count)]
    conn.send("ready")
    start = await loop.run_in_executor(None, conn.recv)  # the shared instant to start at
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    beats = asyncio.create_task(heartbeats(clients))
    dials = [asyncio.create_task(connect(loop, client, port)) for client in clients]
    deadline = start + budget
    while time.monotonic() < deadline:
        if all(c.done_at is not None or c.closed for c in clients):
            break
        await asyncio.sleep(0.05)
    done = [c.done_at for c in clients if c.done_at is not None]
    errors = [c.error for c in clients if c.error and c.done_at is None]
    conn.send(
        {
            "done": len(done),
            "last": max(done, default=None),
            "bytes": sum(c.received for c in clients),
            "errors": len(errors),
            "error": errors[0] if errors else None,
        }
    )
    await loop.run_in_executor(None, conn.recv)  # hold every link until all workers report
    beats.cancel()
    for dial in dials:
        dial.cancel()
    for client in clients:
        client.close()
    await asyncio.gather(beats, *dials, return_exceptions=True)
    await asyncio.sleep(0.1)  # let the closes go out


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
    workers = max(1, min(os.cpu_count() or 1, math.ceil(n / CLIENTS_PER_WORKER)))
    port, http_port = free_port(), free_port()
    ctx = multiprocessing.get_context("fork")
    with distributor(port, http_port, n, mode == "naive", profile) as proc:
        pipes, procs = [], []
        for w in range(workers):
            first, count = w * n // workers, (w + 1) * n // workers - w * n // workers
            parent, child = ctx.Pipe()
            worker = ctx.Process(target=_worker, args=(port, first, count, n, budget, child))
            worker.start()
            child.close()  # the worker's end only: its death then ends our recv() (EOFError)
            pipes.append(parent)
            procs.append(worker)
        try:
            for pipe in pipes:
                if not pipe.poll(60):
                    raise RuntimeError("a storm worker did not start")
                pipe.recv()  # ready
            start = time.monotonic() + 0.2
            for pipe in pipes:
                pipe.send(start)
            reports = []
            for pipe in pipes:
                if not pipe.poll(budget + 30):
                    raise RuntimeError("a storm worker did not report")
                reports.append(pipe.recv())
            peak = status_mb(proc.pid, "VmHWM")
            for pipe in pipes:
                pipe.send("stop")
        finally:
            for worker in procs:
                worker.join(10)
                if worker.is_alive():
                    worker.kill()
    done = sum(r["done"] for r in reports)
    completed = done == n
    last = max((r["last"] for r in reports if r["last"] is not None), default=start)
    entry: dict[str, Any] = {
        "n": n,
        "mode": mode,
        "seconds": round(last - start, 4) if completed else None,
        "bytes_sent": sum(r["bytes"] for r in reports),
        "peak_rss_mb": round(peak, 1),
        "completed": completed,
        "note": "",
        "workers": workers,
    }
    if not completed:
        errors = [r["error"] for r in reports if r["error"]]
        entry["note"] = f"{done}/{n} clients held all members within {budget:g} s" + (
            f"; {sum(r['errors'] for r in reports)} failed, e.g. {errors[0]}" if errors else ""
        )
    return entry


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
        return f"{entry['seconds']:.3f} s, {entry['bytes_sent']:,} B, {entry['peak_rss_mb']} MB"
    return entry["note"]
