"""Resilience on loopback (issue 5): restarts without flapping, joining while the
distributor is dead, several distributors, a distributor that says goodbye.

"Never" is sampled continuously in a thread (Sampler) while the faults happen.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime

from harness.ports import free_port
from harness.procs import Proc
from harness.waiting import Sampler, wait_for
from tests.integration.cluster import full_mesh, member_ids, peer_links, registered_ids, status

NAMES = ["n1", "n2", "n3", "n4", "n5"]


def links_unchanged(nodes: list[Proc]) -> tuple[dict[str, dict[str, str]], object]:
    """The nodes' peer links now, and a check that says which node's links changed since."""
    before = {n.name: peer_links(n) for n in nodes}

    def check() -> str | None:
        for node in nodes:
            now = peer_links(node)
            if now != before[node.name]:
                lost = set(before[node.name]) - set(now)
                return f"{node.name}'s peer links changed ({len(lost)} lost or reconnected)"
        return None

    return before, check


def distributor_states(node: Proc) -> dict[str, str]:
    return {d["address"]: d["state"] for d in status(node)["distributors"]}


def test_three_fast_distributor_restarts_close_no_peer_link(make_cluster, record_figure):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:4]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    _, unchanged = links_unchanged(nodes)
    with Sampler("no peer link closes across three restarts", unchanged) as sampler:
        for _ in range(3):
            distributor.kill()
            time.sleep(0.5)
            distributor = cluster.distributor()
            time.sleep(0.5)
        wait_for(
            "the last distributor lists every node",
            lambda: registered_ids(distributor) == set(ids.values()),
        )
        wait_for(
            "every node is connected to it",
            lambda: all(status(n)["distributors"][0]["state"] == "connected" for n in nodes),
        )
    record_figure("loopback: whole-mesh samples over 3 distributor restarts", sampler.samples, "")
    assert full_mesh(nodes) == ids


def test_a_newcomer_with_a_seed_joins_while_the_distributor_is_dead(make_cluster):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    wait_for("a full mesh", lambda: full_mesh(nodes))
    distributor.kill()
    wait_for(
        "every node sees the distributor gone",
        lambda: all(status(n)["distributors"][0]["state"] != "connected" for n in nodes),
    )
    newcomer = cluster.node("n4", {"MESH_SEEDS": f"127.0.0.1:{nodes[0].port}"})
    everyone = [*nodes, newcomer]
    ids = wait_for("the newcomer meshes through its one seed", lambda: full_mesh(everyone))
    assert status(newcomer)["distributors"][0]["state"] != "connected"

    _, unchanged = links_unchanged(everyone)
    with Sampler("no peer link closes as the distributor returns", unchanged):
        distributor = cluster.distributor()
        wait_for(
            "the returned distributor lists all four, the newcomer too",
            lambda: registered_ids(distributor) == set(ids.values()),
        )
    assert full_mesh(everyone) == ids


def test_two_distributors_kill_one_and_nothing_visible_changes(make_cluster):
    cluster = make_cluster(steady=True)
    first = cluster.distributor(name="d1")
    second = cluster.distributor(port=free_port(), name="d2")
    both = {"MESH_DISTRIBUTORS": f"127.0.0.1:{first.port},127.0.0.1:{second.port}"}
    nodes = [cluster.node(name, both, distributor=False) for name in NAMES[:4]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    for d in (first, second):
        wait_for(f"{d.name} lists all four", lambda d=d: registered_ids(d) == set(ids.values()))
    assert all(set(distributor_states(n).values()) == {"connected"} for n in nodes)

    _, unchanged = links_unchanged(nodes)

    def nothing_visible_changes() -> str | None:
        if registered_ids(second) != set(ids.values()):
            return "d2 no longer lists all four"
        return unchanged()

    gone = f"127.0.0.1:{first.port}"
    with Sampler("d1's death changes nothing visible", nothing_visible_changes):
        first.kill()
        wait_for(
            "every node sees d1 gone and d2 still there",
            lambda: all(
                distributor_states(n)[gone] != "connected"
                and distributor_states(n)[f"127.0.0.1:{second.port}"] == "connected"
                for n in nodes
            ),
        )
        time.sleep(2.0)  # several heartbeat intervals with one distributor

    # the one left still spreads joins and leaves
    late = cluster.node("n5", both, distributor=False)
    everyone = [*nodes, late]
    ids = wait_for("a newcomer registered with d2 only is in the mesh", lambda: full_mesh(everyone))
    assert status(late)["distributors"][0]["state"] != "connected"
    leaver = nodes[3]
    leaver.signal(signal.SIGTERM)
    assert leaver.popen is not None and leaver.popen.wait(timeout=10) == 0
    rest = [n for n in everyone if n is not leaver]
    wait_for(
        "the leaver is gone from d2 and from every node",
        lambda: (
            ids[leaver.name] not in registered_ids(second)
            and all(ids[leaver.name] not in member_ids(n) for n in rest)
        ),
    )
    assert full_mesh(rest) is not None


def test_a_stopping_distributor_tells_its_nodes_who_retry_at_once(make_cluster, record_figure):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [cluster.node(name) for name in NAMES[:3]]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    distributor.signal(signal.SIGTERM)
    assert distributor.popen is not None and distributor.popen.wait(timeout=10) == 0

    def lost_lines(node: Proc) -> list[dict]:
        return [line for line in node.logs() if line.get("event") == "distributor_lost"]

    wait_for("every node logged the loss", lambda: all(lost_lines(n) for n in nodes))
    gaps = []
    for node in nodes:
        lost = lost_lines(node)
        assert [line["reason"] for line in lost] == ["leave"], node.name
        retried = wait_for(
            f"{node.name} retries",
            lambda node=node: [
                line for line in node.logs() if line.get("event") == "distributor_attempt_failed"
            ],
        )
        gaps.append(stamp(retried[0]) - stamp(lost[0]))
    record_figure("loopback: distributor goodbye to the first retry (slowest node)", max(gaps))
    assert full_mesh(nodes) == ids


def stamp(line: dict) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()
