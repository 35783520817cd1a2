"""The headline behaviour, in containers (issue 4): five nodes in a full mesh that survives
its distributor, drops dead or frozen nodes, and follows scaling.

One compose project for the module (see conftest.py); the tests run in order and each
leaves five nodes in a full mesh for the next. Deadlines are generous (DESIGN.md, "Timing");
"stays" and "never" are sampled every 200 ms; measured times are printed, not asserted.
"""

import time

import pytest
from e2e_harness import DISTRIBUTOR_ADDRESS, HEARTBEAT_TIMEOUT, NotYet

pytestmark = pytest.mark.e2e

NODE_PORT = 9010
HOLD = 10.0  # seconds the mesh must stay whole with the distributor dead
PAUSED_HOLD = 5.0  # seconds the links must stay up once all noticed the frozen distributor


def _rest(ids: dict[str, str], victim) -> dict[str, str]:
    return {name: node_id for name, node_id in ids.items() if name != victim.container.name}


def _not_down(replica) -> str | None:
    """A problem in words when a killed replica is not down (restart: unless-stopped)."""
    replica.container.reload()
    state = replica.container.attrs["State"]
    restarts = replica.container.attrs["RestartCount"]
    if state["Status"] == "exited" and restarts == 0:
        return None
    return f"it is {state['Status']}, restarted {restarts} times"


def _wait_rejoined(mesh, nodes, ids, what: str, figure: str) -> None:
    t0 = time.monotonic()
    mesh.wait_until(lambda: mesh.full_mesh(nodes, ids), what)
    mesh.figure(figure, time.monotonic() - t0)


def _fault_until_dropped(mesh, index: int, fault, undo, what: str, figure: str):
    """Applies `fault` to replica `index`, waits until the other nodes and the distributor
    drop it, records how long that took, then `undo`es the fault (also on failure)."""
    nodes = mesh.nodes()
    ids = mesh.node_ids(nodes)
    victim = nodes[index]
    rest, rest_ids = [n for n in nodes if n is not victim], _rest(ids, victim)
    t0 = time.monotonic()
    fault(victim)
    try:
        mesh.wait_until(
            lambda: mesh.full_mesh(rest, rest_ids),
            f"the other 4 nodes and the distributor drop the {what} node",
        )
        mesh.figure(figure, time.monotonic() - t0)
    finally:
        if undo is not None:
            undo(victim)
    return nodes, ids, victim


def _all_noticed(mesh, nodes) -> dict:
    """The nodes' statuses once each reports distributors[0].state != 'connected'."""
    statuses = mesh.statuses(nodes)
    for name, st in statuses.items():
        if st is None or st["distributors"][0]["state"] == "connected":
            raise NotYet(f"{name}: distributors[0] = {st and st['distributors'][0]}")
    return statuses


def _healthy(replica) -> bool:
    replica.container.reload()
    return replica.container.attrs["State"]["Health"]["Status"] == "healthy"


def _distributor_attempt_lines(records: list[dict]) -> list[dict]:
    """Log lines about a failed or retried connection to the distributor."""
    return [
        r
        for r in records
        if DISTRIBUTOR_ADDRESS in map(str, r.values())
        and any(word in str(r.get("event", "")) for word in ("attempt", "retry", "retrying"))
    ]


def test_five_nodes_form_a_full_mesh(mesh):
    ids = mesh.wait_for_full_mesh(5)
    network = f"{mesh.project}_mesh"
    for node in mesh.nodes():
        attrs = node.container.attrs
        ip = attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        status = node.get("/v1/status")
        # Advertise host worked out by the node: its address on the compose network.
        assert status["address"] == f"{ip}:{NODE_PORT}", (node.container.name, status["address"])
        assert status["distributors"][0]["address"] == DISTRIBUTOR_ADDRESS
        assert attrs["Config"]["User"] not in ("", "0", "root")
    assert len(set(ids.values())) == 5
    for replica in [*mesh.nodes(), mesh.distributor]:
        mesh.wait_until(
            lambda r=replica: _healthy(r),
            f"{replica.container.name} is healthy (its compose healthcheck passes)",
        )


def test_distributor_paused_nodes_notice_keep_every_link_and_reregister(mesh):
    """A frozen distributor (docker pause) is found by heartbeat silence, not by a close;
    no peer link is closed, not even briefly (each keeps its `since`), sampled every 200 ms
    from the pause until all are registered again; after the unpause all 5 re-register."""
    nodes = mesh.nodes()
    ids = mesh.node_ids(nodes)
    links = mesh.wait_until(lambda: mesh.peer_links(nodes, ids), "every link is connected")
    assert len(links) == 5 * 4
    distributor = mesh.distributor
    epoch = distributor.get("/v1/members")["epoch"]

    def links_unchanged() -> str | None:
        return mesh.links_problem(nodes, ids, links)

    t0 = time.monotonic()
    distributor.container.pause()
    try:
        mesh.wait_until(
            lambda: _all_noticed(mesh, nodes),
            "every node reports distributors[0].state != 'connected' (heartbeat silence)",
            invariant=links_unchanged,
        )
        mesh.figure(
            f"distributor pause: noticed by all 5 nodes (heartbeat timeout "
            f"{HEARTBEAT_TIMEOUT:.0f} s) after",
            time.monotonic() - t0,
        )
        samples = mesh.hold(
            PAUSED_HOLD,
            lambda: links_unchanged() or mesh.mesh_problem(nodes, ids, "not connected"),
            f"every link, with the distributor frozen, over {PAUSED_HOLD:.0f} s",
        )
        mesh.figure("distributor paused: samples of unchanged links", samples, "samples")
    finally:
        distributor.container.unpause()

    t0 = time.monotonic()
    mesh.wait_until(
        lambda: mesh.full_mesh(nodes, ids),
        "after the unpause, the distributor lists all 5 and each reports it 'connected'",
        invariant=links_unchanged,
    )
    mesh.figure("distributor unpause: all 5 re-registered after", time.monotonic() - t0)
    assert distributor.get("/v1/members")["epoch"] == epoch, "the same run: the same epoch"
    mesh.hold(
        3.0,
        lambda: links_unchanged() or mesh.mesh_problem(nodes, ids),
        "every link once all re-registered",
    )


def test_distributor_killed_nodes_keep_their_mesh_and_retry(mesh):
    nodes = mesh.nodes()
    ids = mesh.node_ids(nodes)
    assert mesh.mesh_problem(nodes, ids) is None
    distributor = mesh.distributor
    mesh.notes["epoch"] = distributor.get("/v1/members")["epoch"]

    killed_at = time.time()
    t0 = time.monotonic()
    distributor.container.kill()

    statuses = mesh.wait_until(
        lambda: _all_noticed(mesh, nodes),
        "every node reports distributors[0].state != 'connected'",
        invariant=lambda: mesh.mesh_problem(nodes, ids, distributor=None),
    )
    mesh.figure("distributor kill: noticed by all 5 nodes after", time.monotonic() - t0)
    attempts_before = {name: st["distributors"][0]["attempts"] for name, st in statuses.items()}

    samples = mesh.hold(
        HOLD,
        lambda: (
            mesh.mesh_problem(nodes, ids, distributor="not connected")
            or _not_down(distributor)  # killed by hand: restart policy leaves it down
        ),
        f"the mesh with the distributor dead (and it down), over {HOLD:.0f} s",
    )
    mesh.figure("distributor dead: samples of a whole mesh", samples, "samples")

    after = mesh.statuses(nodes)
    for name, st in after.items():
        before, now = attempts_before[name], st["distributors"][0]["attempts"]
        assert now > before, f"{name}: distributors[0].attempts did not grow ({before} -> {now})"
        assert st["distributors"][0]["state"] != "connected"
    mesh.figure(
        "distributor dead: attempts per node after the hold",
        sorted(st["distributors"][0]["attempts"] for st in after.values()),
        "",
    )
    for node in nodes:
        lines = _distributor_attempt_lines(node.logs_since(killed_at))
        assert len(lines) >= 2, (
            f"{node.container.name}: its log shows {len(lines)} attempts to reach "
            f"{DISTRIBUTOR_ADDRESS} since the kill; an example line: "
            f"{node.logs_since(killed_at)[-1:]}"
        )


def test_distributor_back_all_reregister_and_the_mesh_never_broke(mesh):
    nodes = mesh.nodes()
    ids = mesh.node_ids(nodes)
    distributor = mesh.distributor
    t0 = time.monotonic()
    distributor.container.start()
    distributor.forget_port()  # an ephemeral host port is chosen again at start

    # Every node reports the distributor 'connected' and it lists all 5; meanwhile every
    # sample shows the mesh whole (the distributor's state aside).
    mesh.wait_until(
        lambda: mesh.full_mesh(nodes, ids),
        "the distributor lists all 5 nodes and each reports it 'connected'",
        invariant=lambda: mesh.mesh_problem(nodes, ids, distributor=None),
    )
    mesh.figure("distributor back: all 5 re-registered after", time.monotonic() - t0)
    assert distributor.get("/v1/members")["epoch"] != mesh.notes["epoch"], "a new run, a new epoch"
    # new incarnations everywhere set off full member-list exchanges: nothing may drop after
    mesh.hold(5.0, lambda: mesh.mesh_problem(nodes, ids), "the mesh once all re-registered")


def test_killed_node_is_dropped_and_stays_down(mesh):
    _, _, victim = _fault_until_dropped(
        mesh,
        1,
        lambda victim: victim.container.kill(),
        None,
        "killed",
        f"node kill: dropped by all (heartbeat timeout {HEARTBEAT_TIMEOUT:.0f} s) after",
    )
    mesh.hold(3.0, lambda: _not_down(victim), "a killed replica stays down")

    victim.container.start()  # a fresh process: a new node id, for the next tests
    victim.forget_port()
    mesh.wait_for_full_mesh(5)


def test_paused_node_is_dropped_then_rejoins_after_unpause(mesh):
    nodes, ids, _ = _fault_until_dropped(
        mesh,
        2,
        lambda victim: victim.container.pause(),
        lambda victim: victim.container.unpause(),
        "frozen",
        "node pause: dropped by all after",
    )
    _wait_rejoined(
        mesh,
        nodes,
        ids,
        "the unpaused node rejoins: a full mesh of 5 again, same id",
        "node unpause: rejoined after",
    )


def test_partitioned_node_is_dropped_then_rejoins_from_its_new_address(mesh):
    network = mesh.client.networks.get(f"{mesh.project}_mesh")
    old_address = mesh.nodes()[3].get("/v1/status")["address"]

    def reconnect(victim) -> None:
        # With the service name as alias, as compose gave it; else the replica loses it.
        network.connect(victim.container, aliases=["node"])
        victim.forget_port()  # the published host port changes too

    nodes, ids, victim = _fault_until_dropped(
        mesh,
        3,
        lambda victim: network.disconnect(victim.container),
        reconnect,
        "cut-off",
        "node partition: dropped by all after",
    )
    _wait_rejoined(
        mesh,
        nodes,
        ids,
        "the reconnected node rejoins: a full mesh of 5 again, same id",
        "node partition healed: rejoined after",
    )
    victim.container.reload()
    ip = victim.container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    # Worked out again at each registration (DESIGN.md, --advertise-host): the address the
    # node gives, and the one the distributor hands to the others, is its address now.
    expected = f"{ip}:{NODE_PORT}"
    given = victim.get("/v1/status")["address"]
    listed = {m["id"]: m["address"] for m in mesh.distributor.get("/v1/members")["members"]}
    victim_id = ids[victim.container.name]
    assert (given, listed[victim_id]) == (expected, expected), (
        f"after reconnect the node is at {expected} (was {old_address}), but it gives "
        f"{given} and the distributor lists {listed[victim_id]}"
    )


def test_scale_up_to_7_then_down_to_3_and_the_mesh_follows(mesh):
    before = set(mesh.node_ids(mesh.nodes()).values())
    t0 = time.monotonic()
    mesh.run("up", "--detach", "--no-build", "--no-recreate", "--wait", "--scale", "node=7")
    mesh.figure("scale to 7: compose up --wait took", time.monotonic() - t0)
    ids7 = mesh.wait_for_full_mesh(7)
    assert before <= set(ids7.values()), "scaling up keeps the nodes that were there"

    t0 = time.monotonic()
    mesh.run("up", "--detach", "--no-build", "--no-recreate", "--wait", "--scale", "node=3")
    mesh.figure("scale to 3: compose up --wait took", time.monotonic() - t0)
    ids3 = mesh.wait_for_full_mesh(3)
    assert set(ids3.values()) < set(ids7.values())
