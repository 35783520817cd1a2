"""The e2e harness: a running compose project, its containers and their HTTP APIs, and
ways to wait and to sample. Used by conftest.py's `mesh` fixture, by the tests, by the chaos
test's own project and by bench/detection.py (`compose_project`).

From the host the tests reach containers only through ports published on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import docker.errors
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "build" / "e2e-logs"

# Timings for the containers (DESIGN.md, "Timing"): a heartbeat timeout of 3 s is long
# enough for the tests that expect nothing to be dropped and short enough for those that
# expect a drop; retries are capped at 1 s so a dead distributor is tried often.
HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TIMEOUT = 3.0
# "Within T" is asserted with 10 x T or 30 s, whichever is larger.
DEADLINE = max(30.0, 10 * HEARTBEAT_TIMEOUT)
SAMPLE_EVERY = 0.2
NODE_HTTP = "9110/tcp"
DISTRIBUTOR_HTTP = "9100/tcp"
DISTRIBUTOR_ADDRESS = "distributor:9000"


class NotYet(Exception):
    """Raised by a condition that does not hold yet; its message says what is missing."""


# what a call through a gateway may answer while the mesh notices that what it called is gone
TRANSIENT = (502, 503)


class GatewayAnswer(Protocol):
    status: int
    body: Any


A = TypeVar("A", bound=GatewayAnswer)


def succeeds_or_fails_clearly(
    call: Callable[[], A], wrong_answer: Callable[[A], str | None], failures: Counter[int]
) -> Callable[[], str | None]:
    """An invariant for the time the mesh takes to notice a loss: each `call()` answers as
    `wrong_answer` allows, or fails clearly, a 502/503 with an error message (the call
    reached what is gone, or its link was going down), counted in `failures`."""

    def check() -> str | None:
        answer = call()
        if answer.status in TRANSIENT:
            failures[answer.status] += 1
            if not (isinstance(answer.body, dict) and answer.body.get("error")):
                return f"a {answer.status} without an error message: {answer.body}"
            return None
        return wrong_answer(answer)

    return check


@dataclass
class Replica:
    """One running container of the project, reached through its published HTTP port."""

    container: Any
    http_port: str = NODE_HTTP
    _port: int | None = field(default=None, repr=False)

    def port(self, refresh: bool = False) -> int:
        if self._port is None or refresh:
            self.container.reload()
            bindings = self.container.attrs["NetworkSettings"]["Ports"].get(self.http_port) or []
            ours = [b for b in bindings if b.get("HostIp") == "127.0.0.1"]
            if not ours:
                raise LookupError(
                    f"{self.container.name}: {self.http_port} not published on 127.0.0.1"
                )
            self._port = int(ours[0]["HostPort"])
        return self._port

    def get(self, path: str, timeout: float = 5.0) -> dict:
        """GET a JSON document from 127.0.0.1; the port is read again after a failure."""
        for attempt in (0, 1):
            try:
                url = f"http://127.0.0.1:{self.port(refresh=attempt > 0)}{path}"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return json.loads(response.read())
            except (OSError, LookupError, ValueError):
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def forget_port(self) -> None:
        """After a start, unpause or network change: the published port may have changed."""
        self._port = None

    def logs_since(self, since: float) -> list[dict]:
        """The JSON log lines the program wrote on stdout since a time (epoch seconds)."""
        lines = []
        raw = self.container.logs(stdout=True, stderr=False, since=int(since))
        for line in raw.decode(errors="replace").splitlines():
            try:
                record = json.loads(line[line.find("{") :])
            except ValueError:
                continue
            if isinstance(record, dict):
                lines.append(record)
        return lines


class Mesh:
    """A running compose project: its containers, their HTTP APIs, and ways to wait on them."""

    def __init__(self, compose, project: str, client, record_figure) -> None:
        self.compose = compose
        self.project = project
        self.client = client
        self.figure = record_figure
        self._replicas: dict[str, Replica] = {}
        self.notes: dict[str, Any] = {}  # what one test leaves for a later one
        self.log_path = LOG_DIR / f"{project}.log"  # written at teardown

    # --- containers ----------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 300) -> str:
        """`docker compose <args>` for this project (its name and timings come from the env)."""
        result = subprocess.run(
            [*self.compose.docker_compose_command(), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result.stdout

    def containers(self, service: str, all: bool = False) -> list:
        labels = [
            f"com.docker.compose.project={self.project}",
            f"com.docker.compose.service={service}",
        ]
        found = self.client.containers.list(all=all, filters={"label": labels})
        return sorted(
            found, key=lambda c: int(c.labels.get("com.docker.compose.container-number", 0))
        )

    def _replica(self, container, http_port: str) -> Replica:
        replica = self._replicas.get(container.id)
        if replica is None:
            replica = self._replicas[container.id] = Replica(container, http_port)
        return replica

    def nodes(self) -> list[Replica]:
        """The running node containers."""
        return [self._replica(c, NODE_HTTP) for c in self.containers("node")]

    @property
    def distributor(self) -> Replica:
        (container,) = self.containers("distributor", all=True)
        return self._replica(container, DISTRIBUTOR_HTTP)

    # --- HTTP ------------------------------------------------------------------------------

    def statuses(self, nodes: list[Replica]) -> dict[str, dict | None]:
        """Each node's /v1/status by container name; None where it did not answer."""
        out: dict[str, dict | None] = {}
        for node in nodes:
            try:
                out[node.container.name] = node.get("/v1/status", timeout=3)
            except (OSError, ValueError, LookupError):
                out[node.container.name] = None
        return out

    def member_ids(self) -> set[str] | None:
        try:
            doc = self.distributor.get("/v1/members", timeout=3)
        except (OSError, ValueError, LookupError):
            return None
        return {m["id"] for m in doc["members"]}

    def node_ids(self, nodes: list[Replica]) -> dict[str, str]:
        """Container name -> node id (fresh at every process start)."""
        statuses = self.wait_until(
            lambda: (s := self.statuses(nodes)) and all(s.values()) and s,
            f"all of {len(nodes)} nodes answer /v1/status",
        )
        return {name: st["id"] for name, st in statuses.items()}

    # --- waiting and sampling -----------------------------------------------------------------

    def wait_until(
        self,
        condition: Callable[[], Any],
        what: str,
        timeout: float = DEADLINE,
        invariant: Callable[[], str | None] | None = None,
    ) -> Any:
        """Polls `condition` every SAMPLE_EVERY until it returns something true, which is
        returned. `invariant` (a problem in words, or None) is checked on every round, so
        "never" holds over the whole wait. Fails after `timeout` with the last observation."""
        end = time.monotonic() + timeout
        last: Any = None
        while True:
            if invariant is not None and (problem := invariant()):
                pytest.fail(f"while waiting until {what}: {problem}{self._see_logs()}")
            try:
                last = condition()
            except (NotYet, OSError, ValueError, LookupError, KeyError, TypeError) as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            if time.monotonic() >= end:
                seen = str(last) if isinstance(last, NotYet) else _short(last)
                pytest.fail(
                    f"not within {timeout:.0f} s: {what}; last seen: {seen}{self._see_logs()}"
                )
            time.sleep(SAMPLE_EVERY)

    def hold(self, duration: float, invariant: Callable[[], str | None], what: str) -> int:
        """Checks `invariant` every SAMPLE_EVERY for `duration` seconds; fails at the first
        problem. Returns the number of samples taken."""
        end = time.monotonic() + duration
        samples = 0
        while time.monotonic() < end:
            if problem := invariant():
                pytest.fail(f"{what} broke after {samples} samples: {problem}{self._see_logs()}")
            samples += 1
            time.sleep(SAMPLE_EVERY)
        return samples

    # --- what a healthy mesh looks like ----------------------------------------------------------

    def mesh_problem(
        self,
        nodes: list[Replica],
        ids: dict[str, str],
        distributor: str | None = "connected",
    ) -> str | None:
        """None when every node has all the others (and only them) as `connected` peers and
        members, and distributors[0] in the given state ("connected", "not connected", or
        None: any); else the first problem found, in words."""
        statuses = self.statuses(nodes)
        for name, st in statuses.items():
            if st is None:
                return f"{name} did not answer /v1/status"
            others = {i for n, i in ids.items() if n != name}
            peers = {p["id"]: p["state"] for p in st["peers"]}
            members = {m["id"] for m in st["members"]}
            if set(peers) != others or members != others:
                return (
                    f"{name}: peers {sorted(peers)} / members {sorted(members)}, "
                    f"expected exactly {sorted(others)}"
                )
            if bad := {i: s for i, s in peers.items() if s != "connected"}:
                return f"{name}: peers not connected: {bad}"
            dist = st["distributors"][0]["state"]
            if distributor == "connected" and dist != "connected":
                return f"{name}: distributors[0].state is {dist!r}, not 'connected'"
            if distributor == "not connected" and dist == "connected":
                return f"{name}: distributors[0].state is 'connected'"
        return None

    def full_mesh(self, nodes: list[Replica], ids: dict[str, str]) -> bool:
        """True when these nodes, and only they, form a full mesh (`mesh_problem`) and the
        distributor lists exactly them; else raises NotYet with what is missing. With the
        survivors of a crash, freeze or partition, it says the lost node was dropped."""
        if problem := self.mesh_problem(nodes, ids):
            raise NotYet(problem)
        if (listed := self.member_ids()) != set(ids.values()):
            raise NotYet(f"the distributor lists {listed}, expected {set(ids.values())}")
        return True

    def wait_for_full_mesh(self, count: int, timeout: float = DEADLINE) -> dict[str, str]:
        """Waits until `count` nodes run, each connected to the distributor and to all the
        others, and the distributor lists exactly them. Returns container name -> node id."""
        t0 = time.monotonic()
        nodes = self.wait_until(
            lambda: len(n := self.nodes()) == count and n, f"{count} node containers run", timeout
        )
        ids = self.node_ids(nodes)
        self.wait_until(
            lambda: self.full_mesh(nodes, ids),
            f"{count} nodes form a full mesh, listed by the distributor",
            timeout,
        )
        self.figure(f"full mesh of {count} nodes reached after", time.monotonic() - t0)
        return ids

    def peer_links(self, nodes: list[Replica], ids: dict[str, str]) -> dict[tuple[str, str], str]:
        """(container name, peer id) -> the link's `since` (when its state last changed), for
        every link among these nodes; raises NotYet unless they are all `connected`."""
        links = {}
        for name, st in self.statuses(nodes).items():
            if st is None:
                raise NotYet(f"{name} did not answer /v1/status")
            peers = {p["id"]: p for p in st["peers"]}
            for peer_id in (i for n, i in ids.items() if n != name):
                peer = peers.get(peer_id)
                if peer is None or peer["state"] != "connected":
                    raise NotYet(f"{name}: the link to {peer_id} is {peer}")
                links[name, peer_id] = peer["since"]
        return links

    def links_problem(
        self, nodes: list[Replica], ids: dict[str, str], links: dict[tuple[str, str], str]
    ) -> str | None:
        """None while every link in `links` (from `peer_links`) is still `connected` with the
        same `since`: it was never closed, not even briefly between two samples; else the
        first problem found, in words."""
        statuses = self.statuses(nodes)
        for (name, peer_id), since in links.items():
            st = statuses.get(name)
            if st is None:
                return f"{name} did not answer /v1/status"
            peer = next((p for p in st["peers"] if p["id"] == peer_id), None)
            if peer is None or peer["state"] != "connected" or peer["since"] != since:
                return f"{name}: the link to {peer_id} (connected since {since}) is now {peer}"
        return None

    def _see_logs(self) -> str:
        return f" (the containers' logs: {self.log_path.relative_to(ROOT)})"

    def dump_logs(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.log_path.write_text(self.run("logs", "--no-color", "--timestamps", timeout=60))
        except (AssertionError, OSError, subprocess.SubprocessError) as exc:
            self.log_path.write_text(f"could not read the logs: {exc}\n")


@contextmanager
def compose_project(
    client, record_figure, nodes: int = 5, prefix: str = "mesh-e2e", **env: str
) -> Iterator[Mesh]:
    """Builds the image (cached when nothing changed), starts a distributor and `nodes`
    nodes under a unique project name (`prefix`-<random>), yields the Mesh once every
    container is healthy, and tears it all down after, also on failure: the logs are saved
    to build/e2e-logs, then `down --volumes` and whatever of the project is left is removed.
    `env` overrides the compose environment below (e.g. MESH_HEARTBEAT_INTERVAL="1")."""
    from testcontainers.compose import DockerCompose

    _remove_orphans(client)
    project = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    environment = {
        "COMPOSE_PROJECT_NAME": project,
        "COMPOSE_ANSI": "never",  # plain logs in build/e2e-logs
        "MESH_NODES": str(nodes),
        "MESH_DISTRIBUTOR_HTTP_PORT": "0",
        "MESH_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "MESH_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "MESH_RETRY_MAX": "1",
        "MESH_LOG_LEVEL": "info",
        "MESH_HEALTHCHECK_INTERVAL": "2s",
        # The default: `docker kill`/`docker compose kill` leave a container down, and the
        # tests check that they do.
        "MESH_RESTART": "unless-stopped",
        **env,
    }
    compose = DockerCompose(ROOT, build=True, pull=False, wait=True)
    with pytest.MonkeyPatch.context() as env_patch:
        for key, value in environment.items():
            env_patch.setenv(key, value)
        mesh = Mesh(compose, project, client, record_figure)
        t0 = time.monotonic()
        try:
            compose.start()  # up --build --wait: every container healthy
            record_figure(f"compose up --build --wait ({nodes} nodes)", time.monotonic() - t0)
            yield mesh
            # a process that crashed was restarted by its policy, with a new id, silently
            crashed = {
                c.name: c.attrs["RestartCount"]
                for c in client.containers.list(
                    all=True, filters={"label": f"com.docker.compose.project={project}"}
                )
                if c.attrs["RestartCount"]
            }
            assert not crashed, f"containers restarted after a crash: {crashed}"
        finally:
            mesh.dump_logs()  # before `down`, so a failed start leaves its logs too
            try:
                compose.stop()  # down --volumes: containers and the network
            finally:
                _remove_leftovers(client, project)


# our projects are named <prefix>-<pid of the test process>-<random>
_OURS = re.compile(r"^mesh-(?:e2e|chaos|bench)-(\d+)-[0-9a-f]{8}$")


# a run in another PID namespace looks dead to us: only projects this old are orphans
ORPHAN_AGE = datetime.timedelta(hours=1)


def _remove_orphans(client) -> None:
    """Projects of an earlier run whose process is gone (killed before its teardown, e.g. a
    CI timeout) and that started over an hour ago are removed: their containers would run
    on for ever (restart: unless-stopped)."""
    now = datetime.datetime.now(datetime.UTC)
    started: dict[str, datetime.datetime] = {}
    every = {"label": "com.docker.compose.project"}
    for c in client.containers.list(all=True, filters=every, ignore_removed=True):
        project = c.labels.get("com.docker.compose.project", "")
        created = datetime.datetime.fromisoformat(c.attrs["Created"][:26].rstrip("Z") + "+00:00")
        started[project] = min(created, started.get(project, created))
    for project, created in sorted(started.items()):
        match = _OURS.match(project)
        if match and now - created > ORPHAN_AGE and not _alive(int(match.group(1))):
            try:
                _remove_leftovers(client, project)
            except docker.errors.APIError as exc:  # e.g. another run removing it right now
                print(f"leftover project {project} not removed: {exc}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


def _remove_leftovers(client, project: str) -> None:
    """After `down`: anything of the project still there (a failed down) is removed."""
    label = {"label": f"com.docker.compose.project={project}"}
    for container in client.containers.list(all=True, filters=label, ignore_removed=True):
        with suppress(docker.errors.NotFound):  # gone meanwhile: what we wanted
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=label):
        with suppress(docker.errors.NotFound):
            network.remove()
    # earlier builds of our image that this run's build untagged (as scripts/setup.sh does)
    client.images.prune(filters={"dangling": True, "label": "org.opencontainers.image.title=mesh"})


def _short(value: Any, limit: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
