"""A mesh through seeds, with no distributor at all (MESH_DISTRIBUTORS set and empty)."""

from __future__ import annotations

import signal

from harness.ports import free_port
from harness.waiting import holds, wait_for
from tests.integration.cluster import full_mesh, member_ids, status

NO_DISTRIBUTOR = {"MESH_DISTRIBUTORS": "", "MESH_PEER_RETRY_WINDOW": "3"}


def seeded(cluster, name: str, *seeds) -> object:
    env = {**NO_DISTRIBUTOR, "MESH_SEEDS": ",".join(f"127.0.0.1:{s.port}" for s in seeds)}
    return cluster.node(name, env, distributor=False)


def test_nodes_join_through_a_chain_of_seeds(make_cluster):
    cluster = make_cluster(steady=True)
    a = seeded(cluster, "a")
    b = seeded(cluster, "b", a)
    c = seeded(cluster, "c", b)  # knows only b; learns a from b's member list
    d = seeded(cluster, "d", c, a)
    nodes = [a, b, c, d]
    ids = wait_for("a full mesh through seeds", lambda: full_mesh(nodes))
    assert status(a)["distributors"] == []
    holds("the seeded mesh is stable", lambda: full_mesh(nodes) == ids, seconds=2)


def test_a_clean_leave_spreads_and_a_crash_is_forgotten_after_the_window(make_cluster):
    cluster = make_cluster()
    a = seeded(cluster, "a")
    b = seeded(cluster, "b", a)
    c = seeded(cluster, "c", a)
    d = seeded(cluster, "d", a)
    ids = wait_for("a full mesh through seeds", lambda: full_mesh([a, b, c, d]))
    d.signal(signal.SIGTERM)  # says goodbye on every link: gone at once, as a tombstone
    wait_for("d is gone everywhere", lambda: all(ids["d"] not in member_ids(n) for n in (a, b, c)))
    c.kill()  # no goodbye and no distributor: retried, then forgotten after the window
    wait_for(
        "c's links show retrying",
        lambda: any(p["id"] == ids["c"] and p["state"] == "retrying" for p in status(a)["peers"]),
    )
    wait_for(
        "c is forgotten after the retry window",
        lambda: all(ids["c"] not in member_ids(n) for n in (a, b)),
    )
    assert full_mesh([a, b]) is not None


def test_a_seed_that_is_not_up_yet_is_retried(make_cluster):
    cluster = make_cluster()
    late_port = free_port()
    env = {**NO_DISTRIBUTOR, "MESH_SEEDS": f"127.0.0.1:{late_port}"}
    early = cluster.node("early", env, distributor=False)
    wait_for(
        "early keeps trying its seed",
        lambda: sum(1 for line in early.logs() if line.get("event") == "seed_attempt_failed") >= 3,
    )
    # the seed comes up on the port early is dialling
    late = cluster.node("late", NO_DISTRIBUTOR, distributor=False, port=late_port)
    wait_for("the two meet", lambda: full_mesh([early, late]))


def test_a_seed_that_is_the_node_itself_is_not_a_peer(make_cluster):
    cluster = make_cluster()
    port = free_port()
    env = {**NO_DISTRIBUTOR, "MESH_SEEDS": f"127.0.0.1:{port}"}
    lonely = cluster.node("lonely", env, distributor=False, port=port)
    wait_for(
        "it notices the seed is itself",
        lambda: any("itself" in line.get("error", "") for line in lonely.logs()),
    )
    holds(
        "no peer appears and it is not 'refuted' into new incarnations",
        lambda: status(lonely)["peers"] == [] and status(lonely)["incarnation"] == 0,
        seconds=1.5,
    )
