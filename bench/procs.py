"""Processes the benchmarks start (distributors, nodes, an echo server) and how they are read."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def raise_nofile() -> int:
    """Lift this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_mb(pid: int, field: str) -> float:
    """A VmRSS / VmHWM line of /proc/<pid>/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of /proc/<pid>/stat: the CPU time the process has used, in seconds."""
    # after "pid (comm)" the fields start at the state, field 3; utime is 14, stime 15
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def wait_healthy(proc: subprocess.Popen[bytes], http_port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{http_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not answer /healthz within {timeout} s")


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
        env=_clean_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        if http_port is not None:
            wait_healthy(proc, http_port)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)  # a profiled run writes its stats on the way out
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


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
