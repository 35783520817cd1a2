"""The stack file on a single-node Docker Swarm (deploy/swarm/stack.yml, issue 13).

Swarm mode is entered only when the engine is not in it already, and left again only
then, however the tests end. The stack runs under a unique name; beside the shipped
file, the tests add a one-replica `client` service (a node of its own that nothing here
scales, kills or updates) and give the nodes `MESH_SERVICES=goods`, so that:

- every node's view is read from inside the client's container (`docker exec`, python:
  the image has no curl), which reaches every task on the overlay network; the
  distributor's members through its port published on the host, on 127.0.0.1;
- requests by service during the rolling update come from the client, which the update
  never touches: it asks its own node (127.0.0.1:9110 in its container) for any `goods`
  provider, so a failure can only be the mesh's (a provider dialled while gone, a
  draining one chosen and then stopped), never the requester's own restart.

The steps run in order on one stack: 5 nodes in a full mesh; scale 5 -> 8 -> 3; a task's
container killed and replaced; the distributor restarted with no peer link dropped; a
rolling update of the nodes with every request by service answered. The stack is removed
and waited for (tasks, containers, network, secrets) at the end, also on failure; the
services' logs go to build/e2e-logs/<stack>.log first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml
from e2e_harness import (
    DEADLINE,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
    LOG_DIR,
    ROOT,
    NotYet,
    _alive,
)

from harness.ports import free_port

pytestmark = pytest.mark.e2e

STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yml"
IMAGE = "mesh:latest"
NODES = 5
DRAIN_SECONDS = 3  # a stopping node stays draining this long: routed requests move away
SAMPLE_EVERY = 0.2
# written while the tests hold the engine in swarm mode that they entered: a run killed
# before its teardown leaves it, and the next run (seeing that pid dead) leaves swarm mode
SWARM_MARK = ROOT / "build" / "swarm-e2e.init"
STACK_NAME = re.compile(r"^mesh-swarm-(\d+)-[0-9a-f]{8}$")  # mesh-swarm-<pid>-<random>

# Runs in the client's container: every node's view over the overlay network, with the
# token the stack gives every task (MESH_HTTP_TOKEN_FILE, a Docker secret).
#   status HOST...     one JSON object: host -> its /v1/status, or {"error": ...}
#   watch HOST...      one such line every 0.15 s (peers and distributors only) until
#                      stdin closes
#   requests SERVICE   POST /v1/request {"service": SERVICE, "method": "ping"} to its own
#                      node back to back until stdin closes; a line per failure, then a
#                      summary line
PROBE = r"""
import json, os, sys, threading, time, urllib.error, urllib.request

TOKEN = open(os.environ["MESH_HTTP_TOKEN_FILE"]).read().strip()
AUTH = {"Authorization": "Bearer " + TOKEN}
stop = threading.Event()

def until_stdin_closes():
    sys.stdin.read()
    stop.set()

def call(url, body=None, timeout=3.0):
    headers = dict(AUTH, **({"Content-Type": "application/json"} if body else {}))
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("X-Mesh-Member"), json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Mesh-Member"), exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        return None, None, repr(exc)

def status(host):
    code, _, doc = call("http://%s:9110/v1/status" % host)
    return doc if code == 200 else {"error": "%s %s" % (code, doc)}

def short(doc):
    if "error" in doc:
        return doc
    return {"id": doc["id"],
            "peers": {p["id"]: [p["state"], p["since"]] for p in doc["peers"]},
            "distributor": doc["distributors"][0]["state"]}

mode, args = sys.argv[1], sys.argv[2:]
if mode == "status":
    print(json.dumps({h: status(h) for h in args}))
    sys.exit(0)
threading.Thread(target=until_stdin_closes, daemon=True).start()
if mode == "watch":
    while not stop.is_set():
        t = time.time()
        print(json.dumps({"t": t, "views": {h: short(status(h)) for h in args}}), flush=True)
        stop.wait(0.15)
elif mode == "requests":
    body = json.dumps({"service": args[0], "method": "ping", "timeout": 5}).encode()
    total, members, failures = 0, {}, 0
    while not stop.is_set():
        code, member, doc = call("http://127.0.0.1:9110/v1/request", body, timeout=10)
        total += 1
        members[member] = members.get(member, 0) + 1
        if code != 200:
            failures += 1
            print(json.dumps({"failure": [time.time(), code, member, str(doc)[:300]]}), flush=True)
        stop.wait(0.02)
    print(json.dumps({"total": total, "failures": failures, "members": members}), flush=True)
"""


# --- the engine in swarm mode ------------------------------------------------------------


class DockerCliFailed(RuntimeError):
    """A `docker` command exited non-zero. Not a NotYet: wait_until lets it through at
    once (it was an AssertionError, retried until the timeout and reported as one)."""


def docker_cli(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise DockerCliFailed(
            f"docker {' '.join(args[:4])} ... failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def swarm_state() -> tuple[str, bool]:
    """(LocalNodeState: inactive | pending | active | error | locked, is a manager)."""
    out = docker_cli("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
    state, manager = out.split()
    return state, manager == "true"


def _stale_mark() -> dict | None:
    """The mark of a run that entered swarm mode and died before leaving it, if any."""
    try:
        mark = json.loads(SWARM_MARK.read_text())
        return None if _alive(int(mark["pid"])) else mark
    except (OSError, ValueError, KeyError, TypeError):
        return None


@pytest.fixture(scope="module")
def swarm(docker_client) -> Iterator[None]:
    """The engine in swarm mode, a manager: entered here only when it was not (and left
    again, with the gateway bridge that entering it made, however the tests end). A run
    killed before its teardown leaves its mark: the next run removes its stacks and leaves
    swarm mode at its end."""
    state, manager = swarm_state()
    stale = _stale_mark() if state == "active" else None
    if state == "inactive":
        made_bridge = not docker_client.networks.list(names=["docker_gwbridge"])
        SWARM_MARK.parent.mkdir(parents=True, exist_ok=True)
        SWARM_MARK.write_text(json.dumps({"pid": os.getpid(), "gwbridge_made": made_bridge}))
        # a task history long enough that no stopped task of this module's tests is pruned
        # before test_stopped_tasks_left_cleanly reads its exit code
        init_args = ["docker", "swarm", "init", "--task-history-limit", "100"]
        init = subprocess.run(init_args, capture_output=True, text=True)
        if init.returncode != 0 and "advertise" in init.stderr:
            # several addresses to choose from: a single-node swarm needs none of them
            init = subprocess.run(
                [*init_args, "--advertise-addr", "127.0.0.1"],
                capture_output=True,
                text=True,
            )
        if init.returncode != 0:
            _leave(docker_client, made_bridge)
            pytest.fail(f"docker swarm init failed: {init.stderr.strip()}")
        ours = True
    elif state != "active" or not manager:
        pytest.fail(f"the engine's swarm state is {state!r} (manager: {manager}): need a manager")
    elif stale is not None:
        made_bridge, ours = bool(stale.get("gwbridge_made")), True
        SWARM_MARK.write_text(json.dumps({"pid": os.getpid(), "gwbridge_made": made_bridge}))
        for name in docker_cli("stack", "ls", "--format", "{{.Name}}").split():
            if (match := STACK_NAME.match(name)) and not _alive(int(match.group(1))):
                _remove_stack(docker_client, name)
    else:
        made_bridge, ours = False, False  # someone else's swarm: left as it is
    try:
        yield
    finally:
        if ours:
            _leave(docker_client, made_bridge)


def _leave(client, made_bridge: bool) -> None:
    docker_cli("swarm", "leave", "--force", check=False)
    if made_bridge:  # swarm init made it; leaving does not remove it
        for network in client.networks.list(names=["docker_gwbridge"]):
            with suppress(docker.errors.APIError):
                network.remove()
    SWARM_MARK.unlink(missing_ok=True)
    state, _ = swarm_state()
    assert state == "inactive", f"the engine is still in swarm mode ({state})"


# --- the stack ---------------------------------------------------------------------------------


class Stack:
    """A deployed stack: its containers, every node's view, waiting and sampling."""

    def __init__(self, name: str, client, token: str, http_port: int, figure) -> None:
        self.name = name
        self.client = client
        self.token = token
        self.http_port = http_port
        self.figure = figure
        self.network = f"{name}_mesh"
        self.log_path = LOG_DIR / f"{name}.log"
        self.notes: dict[str, Any] = {}

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    # --- containers ---------------------------------------------------------------------

    def containers(self, short: str) -> list:
        """The service's running containers (a stopping one included: it still runs)."""
        label = f"com.docker.swarm.service.name={self.service(short)}"
        return self.client.containers.list(
            filters={"label": label, "status": "running"}, ignore_removed=True
        )

    def address(self, container) -> str:
        return container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    def client_container(self):
        (container,) = self.containers("client")
        return container

    def tasks(self, short: str) -> list[dict]:
        return self.client.services.get(self.service(short)).tasks()

    def running_tasks(self, short: str) -> int:
        """Tasks swarm wants running and that run; a stopping one is not counted."""
        return sum(
            1
            for t in self.tasks(short)
            if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
        )

    # --- views ----------------------------------------------------------------------------

    def exec_probe(self, *args: str, timeout: float = 30) -> str:
        return docker_cli(
            "exec", self.client_container().id, "python", "-c", PROBE, *args, timeout=timeout
        )

    def open_probe(self, *args: str) -> Probe:
        return Probe(self.client_container().id, args)

    def statuses(self, addresses: list[str]) -> dict[str, dict]:
        return json.loads(self.exec_probe("status", *addresses))

    def members(self) -> dict:
        """The distributor's /v1/members, through its port published on the host."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/v1/members",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=3) as response:
            return json.loads(response.read())

    def mesh(self, nodes: int) -> dict[str, dict]:
        """When exactly `nodes` node tasks run (none stopping) and they and the client form
        a full mesh that the distributor lists exactly: address -> /v1/status. Else NotYet."""
        if (running := self.running_tasks("node")) != nodes:
            raise NotYet(f"{running} node tasks run, waiting for {nodes}")
        containers = [*self.containers("node"), self.client_container()]
        if len(containers) != nodes + 1:
            raise NotYet(f"{len(containers) - 1} node containers run (one may be stopping)")
        addresses = [self.address(c) for c in containers]
        statuses = self.statuses(addresses)
        ids = {}
        for address, st in statuses.items():
            if "error" in st:
                raise NotYet(f"{address}: {st['error']}")
            ids[address] = st["id"]
        for address, st in statuses.items():
            others = {i for a, i in ids.items() if a != address}
            peers = {p["id"]: p["state"] for p in st["peers"]}
            members = {m["id"] for m in st["members"]}
            if set(peers) != others or members != others:
                raise NotYet(
                    f"{st['name']} ({address}): peers {sorted(peers)}, members "
                    f"{sorted(members)}, expected {sorted(others)}"
                )
            if bad := {i: s for i, s in peers.items() if s != "connected"}:
                raise NotYet(f"{st['name']}: peers not connected: {bad}")
            if (dist := st["distributors"][0]["state"]) != "connected":
                raise NotYet(f"{st['name']}: the distributor is {dist}")
        listed = {m["id"] for m in self.members()["members"]}
        if listed != set(ids.values()):
            raise NotYet(f"the distributor lists {sorted(listed)}, expected {sorted(ids.values())}")
        return statuses

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE):
        """Until `condition()` gives a true value. NotYet and the errors of a cluster on its
        way (a connection refused, a task gone) are retried; a failed `docker` command
        (DockerCliFailed) ends the wait at once, with its own message."""
        end = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = condition()
            except (NotYet, OSError, ValueError, LookupError, AssertionError) as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            if time.monotonic() >= end:
                pytest.fail(f"not within {timeout:.0f} s: {what}; last seen: {last}{self.see()}")
            time.sleep(SAMPLE_EVERY)

    def wait_for_mesh(self, nodes: int, what: str, timeout: float = 2 * DEADLINE) -> dict:
        t0 = time.monotonic()
        statuses = self.wait_until(lambda: self.mesh(nodes), what, timeout)
        self.figure(f"swarm: {what} after", time.monotonic() - t0)
        return statuses

    def see(self) -> str:
        return f" (the services' logs: {self.log_path.relative_to(ROOT)})"

    def dump_logs(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        parts = []
        for short in ("distributor", "node", "client"):
            result = subprocess.run(
                ["docker", "service", "logs", "--timestamps", "--no-trunc", self.service(short)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            parts.append(f"=== {self.service(short)} ===\n{result.stdout}{result.stderr}")
        self.log_path.write_text("\n".join(parts))


class Probe:
    """PROBE running in the client's container until `stop()`; its lines as they come."""

    def __init__(self, container: str, args: tuple[str, ...]) -> None:
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", container, "python", "-c", PROBE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with suppress(ValueError):
                self.lines.append(json.loads(line))

    def stop(self) -> list[dict]:
        assert self.proc.stdin is not None
        with suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=10)
        assert self.proc.returncode == 0, f"the probe failed: {self.proc.stderr.read()}"
        return self.lines


def test_override(secrets_dir: Path) -> dict:
    """What the tests add to the shipped stack file (JSON is YAML): the client service,
    and `goods` on every node, so requests by service have providers to go to."""
    healthcheck = {
        "test": [
            "CMD",
            "python",
            "-c",
            "import os, urllib.request; urllib.request.urlopen("
            "'http://127.0.0.1:%s/healthz' % os.environ['MESH_HTTP_PORT'], timeout=2)",
        ],
        "interval": "5s",
        "timeout": "3s",
        "retries": 3,
    }
    secret = {"uid": "10001", "gid": "10001", "mode": 0o400}
    return {
        "services": {
            "node": {"environment": {"MESH_SERVICES": "goods"}},
            "client": {
                "image": IMAGE,
                "command": ["node"],
                "init": True,
                "read_only": True,
                "cap_drop": ["ALL"],
                "environment": {
                    "MESH_NAME": "client",
                    "MESH_DISTRIBUTORS": "distributor:9000",
                    "MESH_SECRET_FILE": "/run/secrets/mesh_secret",
                    "MESH_HTTP_TOKEN_FILE": "/run/secrets/mesh_http_token",
                    "MESH_HTTP_HOST": "0.0.0.0",
                    "MESH_HTTP_PORT": "9110",
                    "MESH_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
                    "MESH_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                    "MESH_RETRY_MAX": "1",
                },
                "secrets": [
                    {"source": "mesh_secret", **secret},
                    {"source": "mesh_http_token", **secret},
                ],
                "healthcheck": healthcheck,
                "networks": ["mesh"],
                "deploy": {"replicas": 1, "endpoint_mode": "dnsrr"},
            },
        }
    }


test_override.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def stack(swarm, docker_client, record_figure, tmp_path_factory) -> Iterator[Stack]:
    """The image built (cached), the stack deployed under a unique name, and removed after,
    also on failure: `docker stack rm`, then waited for until nothing of it is left."""
    build = subprocess.run(
        ["docker", "compose", "build", "distributor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, f"docker compose build failed: {build.stderr[-2000:]}"
    assert docker_client.images.list(name=IMAGE), f"{IMAGE} is missing: `make setup` builds it"
    name = f"mesh-swarm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    secrets = tmp_path_factory.mktemp("swarm-secrets")
    token = uuid.uuid4().hex
    (secrets / "mesh-secret").write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    (secrets / "http-token").write_text(token)
    override = secrets / "test-override.yml"
    override.write_text(json.dumps(test_override(secrets)))
    port = free_port("0.0.0.0")  # host mode publishes on every address
    env = {
        **os.environ,
        "MESH_IMAGE": IMAGE,
        "MESH_NODES": str(NODES),
        "MESH_SWARM_HTTP_PORT": str(port),
        "MESH_SWARM_SECRETS": str(secrets),
        "MESH_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "MESH_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "MESH_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "MESH_RETRY_MAX": "1",
    }
    stack = Stack(name, docker_client, token, port, record_figure)
    t0 = time.monotonic()
    try:
        deploy = subprocess.run(
            [
                "docker",
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "-c",
                str(STACK_FILE),
                "-c",
                str(override),
                name,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert deploy.returncode == 0, f"docker stack deploy failed: {deploy.stderr}"
        record_figure("swarm: docker stack deploy returned after", time.monotonic() - t0)
        yield stack
    finally:
        with suppress(subprocess.SubprocessError, OSError):
            stack.dump_logs()
        _remove_stack(docker_client, name)


def _remove_stack(client, name: str) -> None:
    """`docker stack rm`, then until its containers, network and secrets are gone (swarm
    removes them in the background); whatever is left after the deadline is removed."""
    docker_cli("stack", "rm", name, check=False)
    label = f"com.docker.stack.namespace={name}"
    end = time.monotonic() + 90
    left: list[str] = []
    while time.monotonic() < end:
        left = [
            *(
                f"container {c.name}"
                # ignore_removed: swarm removes containers while we list them
                for c in client.containers.list(
                    all=True, filters={"label": label}, ignore_removed=True
                )
            ),
            *(f"network {n.name}" for n in client.networks.list(filters={"label": label})),
            *(f"service {s.name}" for s in client.services.list(filters={"label": label})),
            *(f"secret {s.name}" for s in client.secrets.list(filters={"label": label})),
        ]
        if not left:
            return
        time.sleep(0.5)
    for container in client.containers.list(
        all=True, filters={"label": label}, ignore_removed=True
    ):
        with suppress(docker.errors.APIError):
            container.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        with suppress(docker.errors.APIError):
            network.remove()
    pytest.fail(f"stack {name} not gone 90 s after `docker stack rm`: {left}")


# --- the tests ----------------------------------------------------------------------------------


def test_five_nodes_form_a_full_mesh(stack):
    statuses = stack.wait_for_mesh(NODES, f"{NODES} nodes and the client in a full mesh")
    names = sorted(st["name"] for st in statuses.values())
    assert names == ["client", *(f"node-{i}" for i in range(1, NODES + 1))]
    # each advertises its own task address on the overlay network (dnsrr: dialled directly)
    for address, st in statuses.items():
        assert st["address"] == f"{address}:9010", (address, st["address"])
    # the distributor's HTTP is published on the host: the test reads it on 127.0.0.1
    assert len(stack.members()["members"]) == NODES + 1


def test_scale_up_and_down(stack):
    for replicas in (8, 3):
        docker_cli("service", "scale", "--detach", f"{stack.service('node')}={replicas}")
        stack.wait_for_mesh(replicas, f"scaled to {replicas}, the mesh follows")


def test_killed_task_is_replaced(stack):
    before = stack.wait_for_mesh(3, "3 nodes in a mesh before the kill")
    victim = stack.containers("node")[0]
    victim_id = before[stack.address(victim)]["id"]
    victim.kill()
    stack.notes["killed"] = victim.id

    def replaced() -> dict:
        statuses = stack.mesh(3)
        ids = {st["id"] for st in statuses.values()}
        if victim_id in ids:
            raise NotYet("the killed node is still in the mesh")
        if victim.id in {c.id for c in stack.containers("node")}:
            raise NotYet("the killed container still runs")
        return statuses

    stack.wait_until(replaced, "the killed task replaced, the mesh following")


def test_distributor_restart_drops_no_peer_link(stack):
    statuses = stack.wait_for_mesh(3, "3 nodes in a mesh before the distributor restarts")
    addresses = list(statuses)
    links = {
        (st["id"], peer["id"]): peer["since"] for st in statuses.values() for peer in st["peers"]
    }
    epoch = stack.members()["epoch"]
    (old,) = stack.containers("distributor")
    watch = stack.open_probe("watch", *addresses)
    try:
        t0 = time.monotonic()
        docker_cli("service", "update", "--force", "--detach", stack.service("distributor"))

        def back() -> bool:
            if old.id in {c.id for c in stack.containers("distributor")}:
                raise NotYet("the old distributor task still runs")
            if (now := stack.members()["epoch"]) == epoch:
                raise NotYet(f"still epoch {now}")
            return bool(stack.mesh(3))

        stack.wait_until(back, "a new distributor task, every node registered with it")
        stack.figure(
            "swarm: distributor restarted, every node re-registered after", time.monotonic() - t0
        )
        time.sleep(3)  # and a few seconds more of samples
    finally:
        rounds = watch.stop()
    problems = []
    for round_ in rounds:
        for address, view in round_["views"].items():
            if "error" in view:
                problems.append(f"{address} did not answer: {view['error']}")
                continue
            for peer, (state, since) in view["peers"].items():
                was = links.get((view["id"], peer))
                if was is None or state != "connected" or since != was:
                    problems.append(f"{view['id']} -> {peer}: {state} since {since} (was {was})")
    stack.figure("swarm: distributor restart, peer-link samples", len(rounds), "rounds")
    assert len(rounds) >= 10, f"only {len(rounds)} samples"
    assert not problems, f"{len(problems)} problems in {len(rounds)} samples: {problems[:5]}"
    # and every link is in every sample (none vanished)
    for round_ in rounds:
        seen = {(v["id"], p) for v in round_["views"].values() for p in v.get("peers", {})}
        assert seen == set(links), f"links missing: {set(links) - seen}"


def test_rolling_update_keeps_mesh_and_requests(stack):
    before = stack.wait_for_mesh(3, "3 nodes in a mesh before the rolling update")
    old_ids = {st["id"] for st in before.values() if st["name"] != "client"}
    requests = stack.open_probe("requests", "goods")
    try:
        time.sleep(2)  # requests flowing before the update starts
        # the tasks the update replaces: test_stopped_tasks_left_cleanly checks each one
        stack.notes["replaced"] = [
            t["ID"] for t in stack.tasks("node") if t["DesiredState"] == "running"
        ]
        t0 = time.monotonic()
        docker_cli(
            "service", "update", "--detach", "--env-add", "MESH_TAGS=rolled", stack.service("node")
        )

        def completed() -> bool:
            info = stack.client.services.get(stack.service("node")).attrs
            state = info.get("UpdateStatus", {}).get("State")
            if state in ("rollback_started", "rollback_completed", "paused"):
                pytest.fail(f"the update did not go through: {info['UpdateStatus']}{stack.see()}")
            return state == "completed"

        stack.wait_until(completed, "the rolling update completed", timeout=180)
        stack.figure("swarm: rolling update of 3 nodes completed after", time.monotonic() - t0)

        def rolled() -> dict:
            statuses = stack.mesh(3)
            members = stack.members()["members"]
            stale = [
                m["name"] for m in members if m["name"] != "client" and "rolled" not in m["tags"]
            ]
            if stale:
                raise NotYet(f"not updated yet: {stale}")
            return statuses

        after = stack.wait_until(rolled, "every node updated and in the mesh")
        time.sleep(2)  # requests flowing after it too
    finally:
        lines = requests.stop()
    summary = lines[-1]
    failures = [line["failure"] for line in lines if "failure" in line]
    new_ids = {st["id"] for st in after.values() if st["name"] != "client"}
    assert not old_ids & new_ids, "a node was not replaced"
    stack.figure(
        "swarm: requests by service during the rolling update", summary["total"], "requests"
    )
    assert summary["total"] > 50, summary
    assert not failures and summary["failures"] == 0, f"failed requests: {failures[:5]}"
    served = set(summary["members"])
    assert served & old_ids and served & new_ids, (
        f"requests went to {summary['members']}; old {old_ids}, new {new_ids}"
    )


def test_the_k8s_prestop_hook_drains_a_node(stack):
    """deploy/k8s/node.yaml's preStop command, run as is in a node task (the stack sets the
    same MESH_HTTP_PORT and MESH_HTTP_TOKEN_FILE): the node turns draining everywhere."""
    manifests = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "node.yaml").read_text())
    (deployment,) = [d for d in manifests if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    statuses = stack.wait_for_mesh(3, "3 nodes in a mesh before the preStop hook")
    target = stack.containers("node")[0]
    target_id = statuses[stack.address(target)]["id"]
    docker_cli("exec", target.id, *command)

    def draining() -> bool:
        (record,) = [m for m in stack.members()["members"] if m["id"] == target_id]
        return record["draining"] is True

    stack.wait_until(draining, "the distributor lists the node as draining")


def test_stopped_tasks_left_cleanly(stack):
    """Every node task that swarm stopped (scale down, rolling update) exited 0: it drained
    and left within its grace period; the only failed one is the container we killed."""
    # not vacuous: the tasks the rolling update replaced must still be listed (swarm keeps
    # a task history of 5 a slot by default; the swarm we enter keeps 100), each stopped
    replaced = stack.notes.get("replaced")
    assert replaced, (
        "no replaced tasks recorded: test_rolling_update_keeps_mesh_and_requests runs first"
    )
    tasks = stack.tasks("node")
    listed = {task["ID"]: task for task in tasks}
    missing = [task_id for task_id in replaced if task_id not in listed]
    assert not missing, f"swarm pruned the replaced tasks {missing}: their exits cannot be checked"
    assert all(listed[t]["Status"]["State"] not in ("running", "starting") for t in replaced)
    failed, checked = [], 0
    for task in tasks:
        status = task["Status"]
        code = status.get("ContainerStatus", {}).get("ExitCode")
        container = status.get("ContainerStatus", {}).get("ContainerID")
        if status["State"] in ("running", "starting"):
            continue
        checked += 1
        if code == 0:
            continue
        if container != stack.notes.get("killed"):
            failed.append((task["Slot"], status["State"], code, status.get("Err")))
    assert checked >= len(replaced), (checked, replaced)
    assert not failed, f"node tasks that did not leave cleanly: {failed}{stack.see()}"
