"""The gateway (issue 20): users' HTTP through a node's gateway to a Node.js app, beside the
same app called directly and through HAProxy 2.6 with a static backend list; and what an
app's crash costs its callers, beside HAProxy's own health checks at the same interval.

The server under test (the gateway, or HAProxy) runs alone on the first CPUs; the load
(wrk, Debian's) and the app it reaches run on the last one, so what is compared is the
proxies' own cost, not how much CPU each leaves the app. Each repeat measures the three in
turn, so each ratio is of figures taken side by side.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import orjson

from bench.stats import Spread, spread
from harness.ports import free_port
from harness.procs import ROOT, clean_env, http, stop, wait_healthy
from harness.waiting import wait_for

SERVER_JS = ROOT / "examples" / "polyglot" / "server.js"
CHECK_INTERVAL = 1.0  # seconds: the gateway's agent and HAProxy check this often
PATH = "/hello/"


def _cpus() -> tuple[set[int], set[int]]:
    """(the servers' CPUs, the load generator's): the last CPU is the load's."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return set(cpus[:-1]), {cpus[-1]}


def _start(
    args: list[str], env: dict[str, str], log: Path, cpus: set[int]
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )


class Rig:
    """The processes of one measurement, stopped on exit whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers, self.load = _cpus()

    def app(self, name: str) -> tuple[int, subprocess.Popen[bytes]]:
        node = shutil.which("node")
        assert node is not None, "the gateway benchmark needs node (Node.js)"
        port = free_port()
        env = {"PORT": str(port), "HOST": "127.0.0.1", "INSTANCE_NAME": name}
        proc = _start([node, str(SERVER_JS)], env, self.tmp / f"{name}.log", self.load)
        self.procs.append(proc)
        wait_for(f"{name} listening", lambda: answers(port, "/health"))
        return port, proc

    def gateway(self, apps: dict[str, int]) -> int:
        """A node alone (no distributor) with the apps as its instances, checked every
        CHECK_INTERVAL; its gateway's port once every app passes."""
        definitions = [
            {
                "name": "hello",
                "id": name,
                "address": "127.0.0.1",
                "port": port,
                "check": {
                    "http": f"http://127.0.0.1:{port}/health",
                    "interval": f"{CHECK_INTERVAL:g}s",
                    "timeout": "1s",
                },
            }
            for name, port in apps.items()
        ]
        path = self.tmp / "instances.json"
        path.write_bytes(orjson.dumps({"services": definitions}))
        http_port, gateway_port = free_port(), free_port()
        env = clean_env({"MESH_DISTRIBUTORS": "", "MESH_LOG_LEVEL": "warning"})
        args = [sys.executable, "-m", "node", "--host", "127.0.0.1", "--port", str(free_port())]
        args += ["--http-port", str(http_port), "--gateway-port", str(gateway_port)]
        args += ["--instances-file", str(path)]
        proc = _start(args, env, self.tmp / "gateway.log", self.servers)
        self.procs.append(proc)
        wait_healthy(proc, http_port, "gateway node", self.tmp / "gateway.log")

        def all_passing() -> bool:
            code, doc = http("GET", http_port, "/v1/services/hello")
            return code == 200 and {i["health"] for i in doc["instances"]} == {"passing"}

        wait_for("every instance passing", all_passing)
        return gateway_port

    def haproxy(self, apps: dict[str, int], redispatch: bool) -> int:
        """HAProxy 2.6 with the apps as a static backend list, checked every CHECK_INTERVAL
        (fall 1: the first failed check takes a server out, as our checks do); with
        `redispatch`, a connection refused is retried on another server."""
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        assert os.path.exists(binary), "the gateway benchmark needs haproxy: make setup"
        port = free_port()
        retries = "    retries 3\n    option redispatch 1\n" if redispatch else "    retries 0\n"
        servers = "".join(
            f"    server {name} 127.0.0.1:{app_port} check inter {CHECK_INTERVAL * 1000:.0f} "
            "fall 1 rise 1\n"
            for name, app_port in apps.items()
        )
        config = (
            "global\n    nbthread 1\n    maxconn 4096\n"
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n"
            f"    timeout server 30s\n{retries}"
            f"frontend users\n    bind 127.0.0.1:{port}\n    default_backend apps\n"
            f"backend apps\n    balance leastconn\n    option httpchk GET /health\n{servers}"
        )
        path = self.tmp / f"haproxy-{port}.cfg"
        path.write_text(config)
        log = self.tmp / "haproxy.log"
        proc = _start([binary, "-db", "-f", str(path)], {}, log, self.servers)
        self.procs.append(proc)
        wait_for("haproxy answers", lambda: answers(port, PATH))
        return port

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, grace=5.0)
        self.procs.clear()


@contextlib.contextmanager
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        made = Rig(Path(tmp))
        try:
            yield made
        finally:
            made.stop()


def answers(port: int, path: str) -> bool:
    """GET 127.0.0.1:port/path answers 200 (no answer at all is a False too)."""
    try:
        return http("GET", port, path)[0] == 200
    except (OSError, ValueError):
        return False


# -- throughput and latency ----------------------------------------------------------

_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(port: int, connections: int, seconds: int, cpus: set[int]) -> dict[str, float]:
    """wrk's requests a second and p50/p99 latency (ms) for GET PATH on 127.0.0.1:port
    (wrk takes whole seconds)."""
    cpu = ",".join(map(str, sorted(cpus)))
    args = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    done = subprocess.run(
        [*args, f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    out = done.stdout
    latency = {f"p{q}_ms": float(v) * _UNITS[unit] for q, v, unit in _LATENCY.findall(out)}
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, **latency, "non_2xx": int(errors.group(1)) if errors else 0}


def throughput(seconds: int, repeats: int) -> dict[str, Any]:
    """rps with 32 connections and latency with one, for the app directly, through HAProxy
    and through the gateway (one app behind each), `repeats` times in turn."""
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "haproxy": [], "gateway": []}
    with rig() as r:
        app_port, _ = r.app("hello-1")
        ports = {
            "direct": app_port,
            "haproxy": r.haproxy({"hello-1": app_port}, redispatch=False),
            "gateway": r.gateway({"hello-1": app_port}),
        }
        for port in ports.values():  # warm: pools, JITs and caches
            wrk(port, 32, 1, r.load)
        for _ in range(repeats):
            for target, port in ports.items():
                many = wrk(port, 32, seconds, r.load)
                one = wrk(port, 1, seconds, r.load)
                runs[target].append(
                    {
                        "rps": many["rps"],
                        "p50_ms": one["p50_ms"],
                        "p99_ms": one["p99_ms"],
                        "p99_ms_32": many["p99_ms"],
                        "non_2xx": many["non_2xx"] + one["non_2xx"],
                    }
                )
    rps_ratio = [g["rps"] / h["rps"] for g, h in zip(runs["gateway"], runs["haproxy"], strict=True)]
    p50_ratio = [
        g["p50_ms"] / h["p50_ms"] for g, h in zip(runs["gateway"], runs["haproxy"], strict=True)
    ]
    return {
        "runs": runs,
        "rps_vs_haproxy": _figure(spread(rps_ratio)),
        "p50_vs_haproxy": _figure(spread(p50_ratio)),
        "connections": 32,
        "seconds": seconds,
    }


def _figure(figure: Spread | None) -> dict[str, float]:
    assert figure is not None
    return {"min": figure.low, "median": figure.median, "max": figure.high}


# -- an app's crash ----------------------------------------------------------------------


def calls_through_a_crash(port: int, kill: Callable[[], None], after: float) -> dict[str, Any]:
    """One caller, one request at a time on a kept-alive connection, for a second, then
    `kill` (SIGKILL of one of three apps), then `after` seconds more: the calls that failed
    and when the last one did, counted from the kill."""
    failures: list[float] = []
    calls = 0
    killed_at: float | None = None
    started = time.monotonic()
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while True:
            now = time.monotonic()
            if killed_at is None and now - started >= 1.0:
                kill()
                killed_at = time.monotonic()
            if killed_at is not None and now - killed_at >= after:
                break
            calls += 1
            try:
                conn.request("GET", PATH)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, HTTPException):
                ok = False
                conn.close()
                conn = HTTPConnection("127.0.0.1", port, timeout=10)
            if not ok and killed_at is not None:
                failures.append(time.monotonic() - killed_at)
            elif not ok:
                failures.append(-1.0)  # before the kill: a failure of the set-up itself
    finally:
        conn.close()
    return {
        "calls": calls,
        "failed": len(failures),
        "last_failure_after_kill_ms": round(max(failures) * 1000, 1) if failures else None,
    }


def crash(repeats: int, after: float) -> dict[str, list[dict[str, Any]]]:
    """The gateway, HAProxy as configured by default (no retry) and HAProxy with `retries`
    and `option redispatch`, each in front of three apps, one of which is killed."""
    runs: dict[str, list[dict[str, Any]]] = {"gateway": [], "haproxy": [], "haproxy_redispatch": []}
    for _ in range(repeats):
        for target in runs:
            with rig() as r:
                apps = {f"hello-{i}": r.app(f"hello-{i}") for i in (1, 2, 3)}
                ports = {name: port for name, (port, _) in apps.items()}
                if target == "gateway":
                    port = r.gateway(ports)
                else:
                    port = r.haproxy(ports, redispatch=target == "haproxy_redispatch")
                victim = apps["hello-2"][1]
                runs[target].append(calls_through_a_crash(port, victim.kill, after))
    return runs


def run(smoke: bool = False, repeats: int = 3) -> dict[str, Any]:
    seconds, after = (1, 1.5) if smoke else (3, 3.0)
    return {
        "throughput": throughput(seconds, repeats),
        "crash": crash(repeats, after),
        "check_interval_s": CHECK_INTERVAL,
    }


def text(result: dict[str, Any]) -> str:
    """The gateway's rows: each figure min / median / max, and its ratio to HAProxy's."""
    lines = ["gateway (one Node.js app; wrk, 32 connections for rps, 1 for latency)"]
    runs = result["throughput"]["runs"]
    for target in ("direct", "haproxy", "gateway"):
        rps = _figure(spread([r["rps"] for r in runs[target]]))
        p50 = _figure(spread([r["p50_ms"] for r in runs[target]]))
        p99 = _figure(spread([r["p99_ms"] for r in runs[target]]))
        lines.append(
            f"  {target:<8} rps {rps['median']:>8.0f} ({rps['min']:.0f}-{rps['max']:.0f})"
            f"   p50 {p50['median']:.3f} ms   p99 {p99['median']:.3f} ms"
        )
    ratio = result["throughput"]["rps_vs_haproxy"]
    p50 = result["throughput"]["p50_vs_haproxy"]
    lines.append(
        f"  gateway / haproxy: rps {ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f};"
        f" goal >= 0.5), p50 {p50['median']:.2f}x ({p50['min']:.2f}-{p50['max']:.2f}; goal <= 2x)"
    )
    lines.append(
        f"crash of one of three apps (checks every {result['check_interval_s']:g} s; "
        "failed calls, last failure after the kill)"
    )
    for target, runs_ in result["crash"].items():
        failed = [r["failed"] for r in runs_]
        last = [r["last_failure_after_kill_ms"] for r in runs_]
        lines.append(f"  {target:<19} failed {failed}   last failure ms {last}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(text(run(smoke="--smoke" in sys.argv)))
