"""The three behaviours, with real processes on loopback."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from harness.procs import Proc, http
from harness.waiting import Sampler, holds, wait_for
from tests.integration.cluster import (
    connected_peer_ids,
    full_mesh,
    member_ids,
    peer_links,
    registered_ids,
    status,
)

NAMES = ["n1", "n2", "n3", "n4", "n5"]


def links_kept(nodes: list[Proc]) -> Callable[[], str | None]:
    """A check that every node still has the connected peer links it has now, each with the
    same `since`: a link that dropped and came back between two samples has a new one."""
    before = {node.name: peer_links(node) for node in nodes}

    def problem() -> str | None:
        for node in nodes:
            if (now := peer_links(node)) != before[node.name]:
                return f"{node.name}'s links (peer id -> since) were {before[node.name]}, now {now}"
        return None

    return problem


def test_five_nodes_form_a_full_mesh(make_cluster):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES]
    ids = wait_for("a full mesh of five", lambda: full_mesh(nodes))
    assert registered_ids(distributor) == set(ids.values())
    for node in nodes:
        st = status(node)
        assert st["distributors"][0]["state"] == "connected"
        assert sorted(m["name"] for m in st["members"]) == sorted(set(NAMES) - {node.name})
        assert all(p["attempts"] == 0 and p["last_error"] is None for p in st["peers"])


def test_nodes_started_first_keep_retrying_then_join(make_cluster):
    cluster = make_cluster()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    # state 1: fully up (HTTP answers), not connected, attempts growing
    wait_for(
        "every node has failed several attempts",
        lambda: all(status(n)["distributors"][0]["attempts"] >= 3 for n in nodes),
    )
    for node in nodes:
        d = status(node)["distributors"][0]
        assert d["state"] in ("connecting", "disconnected")
        assert d["last_error"]
    assert any(line.get("event") == "distributor_attempt_failed" for line in nodes[0].logs())
    distributor = cluster.distributor()
    ids = wait_for("the late distributor's mesh", lambda: full_mesh(nodes))
    wait_for("all registered", lambda: registered_ids(distributor) == set(ids.values()))
    for node in nodes:
        assert status(node)["distributors"][0]["attempts"] == 0


def test_distributor_death_keeps_the_mesh_and_restart_reregisters(make_cluster, record_figure):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    first_epoch = distributor.get("/v1/members")["epoch"]

    with Sampler("no peer link closed while the distributor died and came back", links_kept(nodes)):
        distributor.kill()
        wait_for(
            "every node sees the distributor gone",
            lambda: all(status(n)["distributors"][0]["state"] != "connected" for n in nodes),
        )
        time.sleep(6)  # the mesh on its own, sampled throughout
        assert all(status(n)["distributors"][0]["attempts"] >= 1 for n in nodes)

        distributor = cluster.distributor()
        restarted = time.monotonic()
        wait_for(
            "the restarted distributor lists every node",
            lambda: registered_ids(distributor) == set(ids.values()),
        )
        record_figure(
            "loopback: restarted distributor lists all 5 (retry cap 1 s)",
            time.monotonic() - restarted,
        )
        doc = distributor.get("/v1/members")
        assert doc["epoch"] != first_epoch
        wait_for(
            "every node connected again",
            lambda: all(status(n)["distributors"][0]["state"] == "connected" for n in nodes),
        )


def test_a_killed_node_is_dropped_by_all_others(make_cluster, record_figure):
    cluster = make_cluster()
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:4]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    victim, others = nodes[0], nodes[1:]
    started = time.monotonic()
    victim.kill()
    gone = ids[victim.name]
    wait_for("the distributor drops it", lambda: gone not in registered_ids(distributor))
    wait_for("every other node drops it", lambda: all(gone not in member_ids(n) for n in others))
    record_figure("loopback: crash dropped everywhere", time.monotonic() - started)
    assert full_mesh(others)


def test_a_frozen_node_is_dropped_and_rejoins_when_thawed(make_cluster, record_figure):
    cluster = make_cluster()
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    frozen, others = nodes[1], [nodes[0], nodes[2]]
    frozen.signal(signal.SIGSTOP)
    started = time.monotonic()
    try:
        wait_for("the distributor drops it", lambda: ids["n2"] not in registered_ids(distributor))
        wait_for("the others drop it", lambda: all(ids["n2"] not in member_ids(n) for n in others))
        record_figure(
            "loopback: freeze dropped everywhere (heartbeat timeout 1.2 s)",
            time.monotonic() - started,
        )
    finally:
        frozen.signal(signal.SIGCONT)
    wait_for("the thawed node is back in a full mesh", lambda: full_mesh(nodes) == ids)
    assert ids["n2"] in registered_ids(distributor)


def test_sigterm_is_a_clean_leave(make_cluster, record_figure):
    cluster = make_cluster()
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    leaver = nodes[2]
    started = time.monotonic()
    leaver.signal(signal.SIGTERM)
    assert leaver.popen is not None
    assert leaver.popen.wait(timeout=10) == 0
    record_figure("loopback: SIGTERM to exit 0", time.monotonic() - started)
    wait_for(
        "the leaver is gone everywhere",
        lambda: (
            ids["n3"] not in registered_ids(distributor)
            and all(ids["n3"] not in member_ids(n) for n in nodes[:2])
        ),
    )
    reasons = [
        line.get("reason")
        for line in distributor.logs()
        if line.get("event") == "member_left" and line.get("member") == "n3"
    ]
    assert reasons == ["leave"]
    joins = [
        line
        for line in distributor.logs()
        if line.get("event") == "member_joined" and line.get("member") == "n3"
    ]
    assert len(joins) == 1, "the leaver registered again while it was leaving"
    assert connected_peer_ids(nodes[0]) == {ids["n2"]}
    # everyone else stops too; every line any of them wrote is one JSON object
    for proc in [*nodes[:2], distributor]:
        proc.signal(signal.SIGTERM)
        assert proc.popen is not None and proc.popen.wait(timeout=10) == 0
    for proc in [*nodes, distributor]:
        text = proc.log_path.read_text()
        assert len(proc.logs()) == len(text.splitlines()), f"{proc.name} wrote non-JSON lines"


def test_a_node_restart_replaces_its_old_self(make_cluster):
    cluster = make_cluster()
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    nodes[0].kill()
    reborn = cluster.node("n1")
    fresh = wait_for("a full mesh with the new n1", lambda: full_mesh([reborn, *nodes[1:]]))
    assert fresh["n1"] != ids["n1"]
    wait_for("the old n1 is gone", lambda: ids["n1"] not in registered_ids(distributor))
    assert http("GET", reborn.http_port, "/healthz") == (200, {"status": "ok"})


def test_a_frozen_distributor_is_not_connected_and_the_mesh_holds(make_cluster):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    with Sampler("no peer link closed while the distributor froze and thawed", links_kept(nodes)):
        distributor.signal(signal.SIGSTOP)
        try:
            # its socket still accepts into the backlog, but no hello is answered: never
            # 'connected'
            wait_for(
                "every node sees the frozen distributor as not connected",
                lambda: all(status(n)["distributors"][0]["state"] != "connected" for n in nodes),
            )
            holds(
                "the distributor stays not connected",
                lambda: all(status(n)["distributors"][0]["state"] != "connected" for n in nodes),
                seconds=4,
            )
        finally:
            distributor.signal(signal.SIGCONT)
        wait_for(
            "every node registered again with the thawed distributor",
            lambda: (
                registered_ids(distributor) == set(ids.values())
                and all(status(n)["distributors"][0]["state"] == "connected" for n in nodes)
            ),
        )
        holds(
            "the registrations settle",
            lambda: registered_ids(distributor) == set(ids.values()),
            seconds=2,
        )
