"""The example in containers (docs/services.md): three `goods` replicas (examples/goods.py,
Python handlers) and a `gateway`, a plain node whose built-in gateway users call on a plain
HTTP port (POST /goods/<method>), from compose's `example` profile.

One compose project for the module (no plain nodes: the distributor, the goods and the
gateway): requests spread over the replicas, a drained replica gets none, and a killed one
costs at most MAX_FAILED_CALLS failed calls while the mesh notices. Each test starts from
the same state, whatever ran before it (`settled`: every replica up, none draining, all
connected at the gateway), and puts back what it changed. "Never" is sampled every 200 ms;
measured times are printed, not asserted.
"""

from __future__ import annotations

import collections
import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_harness import (
    HEARTBEAT_TIMEOUT,
    NODE_HTTP,
    SAMPLE_EVERY,
    NotYet,
    Replica,
    compose_project,
    succeeds_or_fails_clearly,
)

pytestmark = pytest.mark.e2e

GOODS = 3
GATEWAY_HTTP = "9180/tcp"  # the node's gateway (MESH_GATEWAY_PORT in docker-compose.yml)
CALLS = 30  # at least this many calls to see the load spread
HOLD = 5.0  # seconds a "never" is sampled for
# The mesh notices a killed replica within one heartbeat timeout (sooner: the kernel closes
# its links at once); the test calls once a sample: at most every call of that window fails
MAX_FAILED_CALLS = math.ceil(HEARTBEAT_TIMEOUT / SAMPLE_EVERY)


@pytest.fixture(scope="module")
def example(docker_client, record_figure):
    """The distributor, GOODS goods replicas and the gateway (compose profile `example`),
    no plain node; the gateway's user port on an ephemeral 127.0.0.1 port."""
    with compose_project(
        docker_client,
        record_figure,
        nodes=0,
        COMPOSE_PROFILES="example",
        MESH_GOODS=str(GOODS),
        MESH_EXAMPLE_GATEWAY_PORT="0",
    ) as mesh:
        yield mesh


@dataclass
class Answer:
    status: int
    body: Any
    member: str | None  # X-Mesh-Member: the id of the provider that was called


def ask(port: int, method: str = "list", body: Any = None) -> Answer:
    """POST /goods/<method> to the gateway (a request by service to a Python provider); an
    error status is an Answer too, not an exception."""
    data = b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/goods/{method}", data=data, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, exc.headers, exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return Answer(status, body, headers.get("X-Mesh-Member"))


def put_self(replica: Replica, document: dict) -> dict:
    """PUT /v1/self on a replica's node HTTP API, through its published port."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{replica.port()}/v1/self",
        data=json.dumps(document).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def goods(mesh) -> list[Replica]:
    return [Replica(c, NODE_HTTP) for c in mesh.containers("goods")]


def gateway_port(mesh) -> int:
    (container,) = mesh.containers("gateway")
    return Replica(container, GATEWAY_HTTP).port()


def gateway_view(mesh) -> dict[str, dict]:
    """The goods providers as the gateway's node sees them: id -> record with its state."""
    (container,) = mesh.containers("gateway")
    document = Replica(container, NODE_HTTP).get("/v1/services/goods", timeout=3)
    return {record["id"]: record for record in document["members"]}


def replica_names(mesh, replicas: list[Replica]) -> dict[str, str]:
    """Node id -> node name (the container's hostname) of each goods replica."""
    statuses = mesh.wait_until(
        lambda: (s := mesh.statuses(replicas)) and all(s.values()) and s,
        f"the {len(replicas)} goods replicas answer /v1/status",
    )
    return {st["id"]: st["name"] for st in statuses.values()}


def wrong_answer(answer: Answer, allowed: set[str], names: dict[str, str]) -> str | None:
    """A problem in words unless the call succeeded, from one of `allowed`, and the body
    names the replica that the X-Mesh-Member header names."""
    if answer.status != 200:
        return f"the gateway answered {answer.status} {answer.body}"
    if answer.member not in allowed:
        name = names.get(answer.member or "")
        return f"answered by {answer.member} ({name}), not one of {sorted(allowed)}"
    if answer.body.get("replica") != names[answer.member]:
        return f"X-Mesh-Member {answer.member} but the body says {answer.body}"
    return None


def settled(mesh) -> tuple[dict[str, str], int]:
    """The state each test starts from, whatever ran before it: every goods replica running
    (a killed one started again) and not draining, all `connected` at the gateway, which
    answers. Node id -> name of each replica, and the gateway's user port."""
    for container in mesh.containers("goods", all=True):
        container.reload()
        if container.status != "running":
            container.start()
    replicas = goods(mesh)
    assert len(replicas) == GOODS, [r.container.name for r in replicas]
    for replica in replicas:  # a PUT that changes nothing announces nothing
        mesh.wait_until(
            lambda replica=replica: put_self(replica, {"draining": False}),
            f"{replica.container.name} is not draining",
        )
    names = replica_names(mesh, replicas)
    port = gateway_port(mesh)

    def all_connected() -> bool:
        view = gateway_view(mesh)
        states = {names.get(i, i): (r["state"], r["draining"]) for i, r in view.items()}
        if set(view) != set(names) or set(states.values()) != {("connected", False)}:
            raise NotYet(f"the gateway sees {states}")
        return ask(port).status == 200

    mesh.wait_until(all_connected, f"the gateway sees the {GOODS} replicas and answers /goods/list")
    return names, port


def test_gateway_spreads_calls_over_the_three_replicas(example):
    t0 = time.monotonic()
    names, port = settled(example)
    example.figure("example: the gateway answers through 3 replicas after", time.monotonic() - t0)

    seen: collections.Counter[str] = collections.Counter()
    served: dict[str, int] = {}
    while len(seen) < GOODS or seen.total() < CALLS:
        answer = ask(port)
        assert not (problem := wrong_answer(answer, set(names), names)), problem
        assert answer.body["served"] > served.get(answer.member, 0), answer.body
        served[answer.member] = answer.body["served"]
        assert [item["sku"] for item in answer.body["items"]] == ["tea", "mug", "pot"]
        seen[answer.member] += 1
        assert seen.total() < 10 * CALLS, f"after {seen.total()} calls, only {seen}"
    assert set(seen) == set(names), seen
    example.figure("example: calls per replica", sorted(seen.values()), "calls")


def test_gateway_gets_an_item_by_sku_and_maps_a_failure_to_its_status(example):
    names, port = settled(example)
    answer = ask(port, "get", {"sku": "tea"})
    assert not (problem := wrong_answer(answer, set(names), names)), problem
    assert answer.body["item"] == {"sku": "tea", "name": "Green tea", "price": 4.5}
    # the provider's handler failed: 502 with its message, naming the member called
    missing = ask(port, "get", {"sku": "nope"})
    assert missing.status == 502, missing
    assert missing.body == {"error": "no item with sku 'nope'"}, missing
    assert missing.member in names, missing
    # a mesh service is called with POST; anything else is a 405 from the gateway itself
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/goods/list", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 405, exc
    else:
        raise AssertionError("GET /goods/list answered")


def test_drained_replica_gets_no_more_calls(example):
    names, port = settled(example)
    drained = goods(example)[0]
    try:
        drain_one(example, names, port, drained)
    finally:  # the next test finds every replica in rotation (settled checks it too)
        put_self(drained, {"draining": False})


def drain_one(example, names: dict[str, str], port: int, drained: Replica) -> None:
    drained_id = drained.get("/v1/status")["id"]
    others = set(names) - {drained_id}

    record = put_self(drained, {"draining": True})
    assert record["id"] == drained_id and record["draining"] is True, record
    t0 = time.monotonic()
    example.wait_until(
        lambda: gateway_view(example)[drained_id]["draining"],
        f"the gateway sees {names[drained_id]} draining",
    )
    example.figure("example: a drain reached the gateway after", time.monotonic() - t0)
    with pytest.raises(urllib.error.HTTPError) as not_ready:
        drained.get("/readyz")
    assert not_ready.value.code == 503

    seen: collections.Counter[str] = collections.Counter()

    def only_the_others() -> str | None:
        answer = ask(port)
        seen[answer.member or ""] += 1
        return wrong_answer(answer, others, names)

    samples = example.hold(HOLD, only_the_others, f"no call reaches the drained {drained_id}")
    assert set(seen) == others, seen  # and both others take their share
    example.figure("example: calls sampled while one replica drains", samples, "calls")


def test_killed_replica_calls_carry_on(example):
    names, port = settled(example)
    replicas = {r.get("/v1/status")["id"]: r for r in goods(example)}
    killed_id, *survivors = sorted(replicas)
    try:
        kill_one(example, names, port, replicas, killed_id, set(survivors))
    finally:  # started again, a new member: the next test finds GOODS replicas (settled)
        replicas[killed_id].container.start()


def kill_one(
    example,
    names: dict[str, str],
    port: int,
    replicas: dict[str, Replica],
    killed_id: str,
    survivors: set[str],
) -> None:
    failures: collections.Counter[int] = collections.Counter()

    # before the gateway notices the kill: an answer from a survivor, or a clear 502/503
    calls_carry_on = succeeds_or_fails_clearly(
        lambda: ask(port), lambda answer: wrong_answer(answer, survivors, names), failures
    )

    def noticed() -> bool:
        record = gateway_view(example).get(killed_id)
        if record is not None and record["state"] == "connected":
            raise NotYet(f"the gateway still has {names[killed_id]} connected")
        return True

    t0 = time.monotonic()
    replicas[killed_id].container.kill()
    example.wait_until(
        noticed,
        f"the gateway notices that {names[killed_id]} was killed",
        invariant=calls_carry_on,
    )
    example.figure("example: the gateway noticed a killed replica after", time.monotonic() - t0)
    example.wait_until(
        lambda: ask(port).status == 200,
        "gateway calls succeed again",
        invariant=calls_carry_on,
    )
    example.figure("example: calls failed while the kill was noticed", failures.total(), "calls")
    # "at most a few": bounded, not only printed
    assert failures.total() <= MAX_FAILED_CALLS, (failures, MAX_FAILED_CALLS)

    def every_call_succeeds() -> str | None:
        return wrong_answer(ask(port), survivors, names)

    example.hold(HOLD, every_call_succeeds, "every call succeeds once the kill was noticed")
    killed = replicas[killed_id].container
    killed.reload()
    assert killed.status == "exited", killed.status  # it stays down (restart: unless-stopped)
