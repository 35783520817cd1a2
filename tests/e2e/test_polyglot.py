"""Services in any language, in containers (docs/polyglot.md; issue 20): compose's
`polyglot` profile runs a Node.js app (examples/polyglot/server.js) in 3 replicas, hello-N,
each beside its agent node hello-N-agent that registers it from examples/polyglot/hello-N.json
and checks its /health every second; every node's gateway routes /hello/... to a healthy
replica and names it in `X-Mesh-Instance: <agent id>/hello-N`.

One compose project for the module: the distributor, one plain node and the three pairs;
hello-1-agent's gateway on an ephemeral 127.0.0.1 port, every node's HTTP API and gateway on
ephemeral 127.0.0.1 ports. The tests run in order: calls spread over the 3 replicas through
every node's gateway, streaming and a large body pass through, `docker compose stop
hello-2` turns its instance critical (its agent stays) and no call reaches it after, a
`docker kill` of hello-3 likewise, and hello-2 started again is back in rotation. "Never"
is sampled continuously for HOLD seconds; measured times are printed, not asserted.

Skipped until the node has its gateway (`--gateway-port`, issue 20): the compose file and
the app are ready before it.
"""

from __future__ import annotations

import collections
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_harness import (
    NODE_HTTP,
    ROOT,
    NotYet,
    Replica,
    compose_project,
    succeeds_or_fails_clearly,
)

pytestmark = pytest.mark.e2e

PAIRS = (1, 2, 3)
GATEWAY = "9180/tcp"  # MESH_GATEWAY_PORT in docker-compose.yml, on every node
CALLS = 30  # at least this many calls to see the load spread
HOLD = 5.0  # seconds a "never" is sampled for, continuously
CALLS_PER_SAMPLE = 3
FIRST_ANSWER = 120.0  # containers and checks starting on a loaded 2-core machine
NOTICE = 60.0  # a stopped or killed app is critical well within this (checks every 1 s)


def _node_base_image() -> str | None:
    if value := os.environ.get("NODE_BASE_IMAGE"):
        return value
    path = ROOT / ".env"
    lines = path.read_text().splitlines() if path.exists() else []
    pairs = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return pairs.get("NODE_BASE_IMAGE")


@pytest.fixture(scope="module")
def polyglot(docker_client, record_figure):
    """The distributor, one plain node and the three app + agent pairs (compose profile
    `polyglot`); hello-1-agent's gateway on an ephemeral 127.0.0.1 port."""
    base = _node_base_image()
    if base and not docker_client.images.list(name=base):
        pytest.fail(f"the Node.js base image {base} (from .env) is missing: `make setup` builds it")
    with compose_project(
        docker_client,
        record_figure,
        nodes=1,
        COMPOSE_PROFILES="polyglot",
        MESH_POLYGLOT_GATEWAY_PORT="0",
    ) as mesh:
        yield mesh


# --- calls and views -----------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: the gateway itself could not be reached
    body: Any
    instance: str | None  # X-Mesh-Instance: <agent id>/<instance id>


def call(port: int, path: str = "/hello/", timeout: float = 10.0) -> Answer:
    """A gateway call; an error status, or no answer at all, is an Answer too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, exc.headers, exc.read()
    except OSError as exc:
        return Answer(0, f"{type(exc).__name__}: {exc}", None)
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return Answer(status, body, headers.get("X-Mesh-Instance"))


def agent(mesh, n: int) -> Replica:
    (container,) = mesh.containers(f"hello-{n}-agent")
    return Replica(container, NODE_HTTP)


def gateway_port(mesh, service: str = "hello-1-agent", index: int = 0) -> int:
    container = mesh.containers(service)[index]
    return Replica(container, GATEWAY).port()


def _member_id(instance: dict) -> str:
    member = instance.get("member")
    return member.get("id") if isinstance(member, dict) else member


def view(replica: Replica) -> dict[str, str]:
    """The hello instances as this node sees them: "<agent id>/<instance id>" -> health."""
    document = replica.get("/v1/services/hello", timeout=3)
    return {f"{_member_id(i)}/{i['id']}": i["health"] for i in document.get("instances", [])}


def expected_instances(mesh) -> dict[int, str]:
    """Pair number -> the X-Mesh-Instance its calls carry: <its agent's id>/hello-N."""
    agents = {n: agent(mesh, n) for n in PAIRS}
    ids = mesh.node_ids(list(agents.values()))
    return {n: f"{ids[a.container.name]}/hello-{n}" for n, a in agents.items()}


def wrong_answer(answer: Answer, allowed: dict[int, str]) -> str | None:
    """A problem in words unless the call succeeded through one of `allowed`'s instances
    and the body is that app's own answer."""
    if answer.status != 200:
        return f"the gateway answered {answer.status} {answer.body}"
    if answer.instance not in allowed.values():
        return f"answered by {answer.instance}, not one of {sorted(allowed.values())}"
    instance_id = answer.instance.rpartition("/")[2]
    if not isinstance(answer.body, dict) or answer.body.get("instance") != instance_id:
        return f"X-Mesh-Instance {answer.instance} but the body says {answer.body}"
    return None


def all_passing(replica: Replica, expected: dict[int, str]) -> bool:
    seen = view(replica)
    if any(seen.get(key) != "passing" for key in expected.values()):
        raise NotYet(f"{replica.container.name} sees {seen}, expected {expected} passing")
    return True


# --- the tests, in order -------------------------------------------------------------------------


def test_calls_spread_over_the_three_replicas(polyglot):
    t0 = time.monotonic()
    expected = expected_instances(polyglot)
    port = gateway_port(polyglot)
    gateway_node = agent(polyglot, 1)

    def answers() -> bool:
        all_passing(gateway_node, expected)
        answer = call(port)
        if answer.status != 200:
            raise NotYet(f"GET /hello/ answered {answer.status} {answer.body}")
        return True

    polyglot.wait_until(answers, "the gateway answers /hello/ with 3 passing", FIRST_ANSWER)
    polyglot.figure(
        "polyglot: the gateway answered through 3 replicas after", time.monotonic() - t0
    )

    seen: collections.Counter[str] = collections.Counter()
    while len(seen) < len(PAIRS) or seen.total() < CALLS:
        answer = call(port)
        assert not (problem := wrong_answer(answer, expected)), problem
        assert answer.body["path"] == "/hello/", answer.body
        seen[answer.instance] += 1
        assert seen.total() < 10 * CALLS, f"after {seen.total()} calls, only {seen}"
    assert set(seen) == set(expected.values()), seen
    polyglot.figure("polyglot: calls per replica", sorted(seen.values()), "calls")
    polyglot.notes["expected"] = expected


def test_every_nodes_gateway_reaches_them(polyglot):
    """Each agent's gateway and the plain node's (which runs no app) route to the apps."""
    expected = polyglot.notes["expected"]
    gateways = {f"hello-{n}-agent": gateway_port(polyglot, f"hello-{n}-agent") for n in PAIRS}
    gateways["node"] = gateway_port(polyglot, "node")
    plain = Replica(polyglot.containers("node")[0], NODE_HTTP)
    polyglot.wait_until(lambda: all_passing(plain, expected), "the plain node sees 3 passing")
    for name, port in gateways.items():
        seen = set()
        for _ in range(2 * len(PAIRS)):
            answer = call(port)
            assert not (problem := wrong_answer(answer, expected)), f"{name}: {problem}"
            seen.add(answer.instance)
        assert len(seen) > 1, f"{name}'s gateway sent every call to {seen}"


def test_streams_and_large_bodies_pass_through(polyglot):
    expected = polyglot.notes["expected"]
    port = gateway_port(polyglot)
    size = 4 * 1024 * 1024
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello/bytes?n={size}", timeout=30) as r:
        assert r.headers.get("X-Mesh-Instance") in expected.values()
        data = r.read()
    pattern = bytes(range(251))
    assert len(data) == size
    assert data == (pattern * (size // 251 + 1))[:size], "the body came through changed"

    # chunks 500 ms apart: the first one reaches us before the app has sent the last
    url = f"http://127.0.0.1:{port}/hello/stream?chunks=4&interval_ms=500"
    with urllib.request.urlopen(url, timeout=30) as r:
        first = json.loads(r.readline())
        first_at = time.time()  # containers share the host's clock
        lines = [first] + [json.loads(line) for line in r.read().splitlines() if line]
    assert [line["chunk"] for line in lines] == [0, 1, 2, 3], lines
    assert first_at < lines[-1]["at"] / 1000, "the stream was held until it ended"


# An app that is not written for the mesh finds the instances with plain DNS: Node.js' own
# resolver in an app container asks a node (Docker's DNS gives its address) and the
# distributor on port 8600 for SRV records, resolves each target with the same server and
# calls the instance it names.
RESOLVE_AND_CALL = r"""
const dns = require("dns"), http = require("http");
async function ask(server) {
  const { address } = await dns.promises.lookup(server);
  const resolver = new dns.promises.Resolver();
  resolver.setServers([`${address}:8600`]);
  const records = await resolver.resolveSrv("_hello._tcp.service.mesh");
  const answers = [];
  for (const { name, port } of records) {
    const [ip] = await resolver.resolve4(name);
    const body = await new Promise((ok, fail) => {
      http.get({ host: ip, port, path: "/hello/dns", timeout: 5000 }, (res) => {
        let data = "";
        res.on("data", (chunk) => (data += chunk));
        res.on("end", () => ok(JSON.parse(data)));
      }).on("error", fail);
    });
    answers.push({ name, port, ip, instance: body.instance });
  }
  return answers;
}
Promise.all([ask("node"), ask("distributor")])
  .then((both) => console.log(JSON.stringify(both)))
  .catch((err) => { console.error(String(err)); process.exit(1); });
"""


def test_an_app_container_finds_the_instances_through_dns(polyglot):
    expected = expected_instances(polyglot)
    polyglot.wait_until(lambda: all_passing(agent(polyglot, 1), expected), "all three passing")
    (app,) = polyglot.containers("hello-1")

    def resolved() -> list:
        code, output = app.exec_run(["node", "-e", RESOLVE_AND_CALL])
        if code != 0:
            raise NotYet(f"node -e exited {code}: {output.decode(errors='replace')[-300:]}")
        return json.loads(output)

    from_node, from_distributor = polyglot.wait_until(resolved, "SRV records answer from DNS")
    for answers in (from_node, from_distributor):
        assert sorted(a["instance"] for a in answers) == [f"hello-{n}" for n in PAIRS], answers
        assert {a["port"] for a in answers} == {3000}, answers


def _leaves_rotation(polyglot, n: int, how: str, stop) -> None:
    """Stops app hello-N (`stop()`), waits until the gateway's node sees its instance
    critical (calls meanwhile succeed or fail clearly), then samples calls continuously for
    HOLD seconds: every one succeeds, none reaches hello-N. Its agent stays a member."""
    expected = polyglot.notes["expected"]
    down = polyglot.notes.setdefault("down", set())
    gone = expected[n]
    up = {k: v for k, v in expected.items() if k != n and k not in down}
    port = gateway_port(polyglot)
    gateway_node = agent(polyglot, 1)
    failures: collections.Counter[int] = collections.Counter()

    calls_carry_on = succeeds_or_fails_clearly(
        lambda: call(port), lambda answer: wrong_answer(answer, {**up, n: gone}), failures
    )

    def critical() -> bool:
        health = view(gateway_node).get(gone)
        if health != "critical":
            raise NotYet(f"{gateway_node.container.name} sees {gone} as {health}")
        return True

    t0 = time.monotonic()
    stop()
    polyglot.wait_until(
        critical,
        f"hello-{n} ({how}) is critical in the gateway node's view",
        NOTICE,
        invariant=calls_carry_on,
    )
    polyglot.figure(f"polyglot: hello-{n} ({how}) critical after", time.monotonic() - t0)
    polyglot.figure(
        f"polyglot: calls failed while hello-{n} ({how}) was noticed", failures.total(), "calls"
    )

    seen: collections.Counter[str] = collections.Counter()

    def never_the_gone_one() -> str | None:
        for _ in range(CALLS_PER_SAMPLE):
            answer = call(port)
            seen[answer.instance or ""] += 1
            if problem := wrong_answer(answer, up):
                return problem
        return None

    samples = polyglot.hold(HOLD, never_the_gone_one, f"no call reaches hello-{n} ({how})")
    assert set(seen) == set(up.values()), seen
    polyglot.figure(
        f"polyglot: calls sampled after hello-{n} ({how})", samples * CALLS_PER_SAMPLE, "calls"
    )

    # the app is down and stays down; its agent is up, still a member, still listing it
    (app,) = polyglot.containers(f"hello-{n}", all=True)
    app.reload()
    assert app.status == "exited", app.status
    its_agent = agent(polyglot, n)
    assert its_agent.container.status == "running"
    assert gone.partition("/")[0] in (polyglot.member_ids() or set())
    assert view(its_agent).get(gone) == "critical"
    down.add(n)


def test_a_stopped_app_turns_critical_and_leaves_rotation(polyglot):
    _leaves_rotation(polyglot, 2, "docker compose stop", lambda: polyglot.run("stop", "hello-2"))


def test_a_killed_app_leaves_rotation(polyglot):
    (container,) = polyglot.containers("hello-3")
    _leaves_rotation(polyglot, 3, "docker kill", container.kill)


def test_a_started_app_comes_back(polyglot):
    expected = polyglot.notes["expected"]
    port = gateway_port(polyglot)
    gateway_node = agent(polyglot, 1)
    t0 = time.monotonic()
    polyglot.run("start", "hello-2")

    def passing() -> bool:
        health = view(gateway_node).get(expected[2])
        if health != "passing":
            raise NotYet(f"hello-2 is {health}")
        return True

    polyglot.wait_until(passing, "hello-2 is passing again", NOTICE)
    polyglot.figure("polyglot: hello-2 passing again after a start", time.monotonic() - t0)
    back = {1: expected[1], 2: expected[2]}
    seen = set()
    for _ in range(CALLS):
        answer = call(port)
        assert not (problem := wrong_answer(answer, back)), problem
        seen.add(answer.instance)
    assert seen == set(back.values()), seen
