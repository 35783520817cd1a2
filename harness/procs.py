"""Programs started on loopback, asked over their HTTP API, stopped, and read from /proc."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.waiting import DEADLINE

ROOT = Path(__file__).resolve().parent.parent


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without its MESH_* settings, with `extra` on top; the
    programs import the tree under test (ROOT) first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def http(
    method: str,
    port: int,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request to 127.0.0.1:`port`: the status code and the JSON answer (also for errors)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            code, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, payload = exc.code, exc.read()
    return code, json.loads(payload or b"null")


class StartFailed(RuntimeError):
    """A program exited while starting, or did not answer /healthz in time."""


def wait_healthy(
    popen: subprocess.Popen[bytes],
    http_port: int,
    name: str,
    log_path: Path | None = None,
    timeout: float = DEADLINE,
) -> None:
    """Until GET /healthz answers 200; fails at once, with the end of its log, if it exited."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        if popen.poll() is not None:
            output = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise StartFailed(f"{name} exited with {popen.returncode} while starting\n{output}")
        try:
            if http("GET", http_port, "/healthz")[0] == 200:
                return
        except (OSError, ValueError) as exc:  # not listening yet
            last = exc
        time.sleep(0.05)
    raise StartFailed(f"{name} did not answer /healthz within {timeout} s (last: {last!r})")


def stop(popen: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited after `grace` seconds (a profiled run
    writes its stats on the way out)."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    if popen.stderr is not None:
        popen.stderr.close()


@dataclass
class Proc:
    """A program on loopback with its mesh `port` and `http_port`; its output goes to
    `log_path`. It runs in a session of its own, so a terminal's Ctrl-C reaches only us."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    http_port: int
    port: int
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def stop(self, grace: float = 30.0) -> None:
        if self.popen is not None:
            stop(self.popen, grace)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, timeout: float = DEADLINE) -> None:
        assert self.popen is not None
        wait_healthy(self.popen, self.http_port, self.name, self.log_path, timeout)

    def get(self, path: str) -> Any:
        """A JSON document from the HTTP API; anything but 200 fails."""
        code, doc = http("GET", self.http_port, path)
        assert code == 200, (code, doc)
        return doc

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log lines (other output skipped)."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


def raise_nofile() -> int:
    """Lift this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


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
