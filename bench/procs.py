"""How the benchmarks start their programs: quiet, optionally profiled, sized for a storm."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from harness.procs import ROOT, clean_env, stop, wait_healthy

# the CPUs we may use, as when the bench started (before pin_load narrowed them)
_USABLE = sorted(os.sched_getaffinity(0))


def cpus() -> tuple[set[int], set[int]]:
    """(the server's CPUs, the load's CPU): the last usable CPU for the load (the clients,
    the caller), the others for the program under test, so the two do not take turns on
    one core (issue 23). Both all of them on a single-CPU machine."""
    if len(_USABLE) < 2:
        return set(_USABLE), set(_USABLE)
    return set(_USABLE[:-1]), {_USABLE[-1]}


_pinning = [False]  # inside load_pinned(): program() pins what it starts to the server's


def settle(idle: float = 0.9, most: float = 30.0, window: float = 0.5) -> float:
    """Wait until the machine's CPUs were `idle` (a fraction) for a whole `window`, `most`
    seconds at the longest; returns the seconds waited. A guard, not a proven cure: one
    run measured propagation right after the N=10,000 storm 1.3x worse than the same code
    alone a minute later, and what the storm leaves behind (10,000 sockets closing) is
    not the next section's; in the run after it was added it never waited a second."""
    started = time.monotonic()
    while time.monotonic() - started < most:
        before = _cpu_times()
        time.sleep(window)
        busy, total = (now - then for now, then in zip(_cpu_times(), before, strict=True))
        if total and 1 - busy / total >= idle:
            break
    return time.monotonic() - started


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat's first line."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


@contextlib.contextmanager
def load_pinned() -> Iterator[None]:
    """This process (and what it forks meanwhile: a storm's workers) on the load's CPU, and
    every program() started meanwhile on the others; as before once the block is left."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus()[1])
    _pinning[0] = True
    try:
        yield
    finally:
        _pinning[0] = False
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def program(
    module: str,
    args: list[str],
    env: dict[str, str],
    http_port: int | None = None,
    profile: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m module args` with MESH_* from `env` only; stopped (SIGTERM, then kill) after.

    With `profile`, it runs under cProfile and writes its stats there when it exits.
    """
    prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
    proc = subprocess.Popen(
        [sys.executable, *prefix, "-m", module, *args],
        env=clean_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    if _pinning[0]:  # the server under test: off the load's CPU
        os.sched_setaffinity(proc.pid, cpus()[0])
    try:
        if http_port is not None:
            wait_healthy(proc, http_port, module)
        yield proc
    finally:
        stop(proc)


def distributor(
    port: int, http_port: int, capacity: int, naive: bool = False, profile: Path | None = None
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """The real distributor (or the naive reference one), sized for `capacity` nodes."""
    env = {
        "MESH_MAX_CONNECTIONS": str(capacity + 1024),
        "MESH_MAX_MEMBERS": str(capacity + 16),
    }
    args = ["--host", "127.0.0.1", "--port", str(port), "--http-port", str(http_port)]
    # info logs one line per join: the figure is the protocol's, not the log's
    args += ["--log-level", "warning"]
    return program("bench.naive" if naive else "distributor", args, env, http_port, profile)
