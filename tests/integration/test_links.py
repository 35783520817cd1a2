"""Partial partitions: nodes report the peers they cannot reach, the distributor shows them."""

from __future__ import annotations

from harness.procs import http
from harness.waiting import wait_for
from tests.integration.cluster import GhostPeer, full_mesh


def broken_pairs(distributor) -> set[tuple[str, str]]:
    code, doc = http("GET", distributor.http_port, "/v1/links")
    assert code == 200, doc
    return {(link["from_name"], link["to_name"]) for link in doc["broken"]}


def test_a_partial_partition_shows_in_links_and_clears_when_it_heals(make_cluster) -> None:
    cluster = make_cluster()  # short heartbeats: a link is reported 1.2 s after it breaks
    distributor = cluster.distributor()
    a, b = cluster.node("a"), cluster.node("b")
    wait_for("a full mesh", lambda: full_mesh([a, b]))
    with GhostPeer(cluster.distributor_port) as ghost:
        # registered with the distributor, unreachable for the nodes
        wait_for(
            "both nodes report the ghost",
            lambda: broken_pairs(distributor) == {("a", "ghost"), ("b", "ghost")},
        )
        _, doc = http("GET", distributor.http_port, "/v1/links")
        link = next(link for link in doc["broken"] if link["from_name"] == "a")
        assert link["to"] == ghost.id and link["state"] == "retrying" and link["since"]

        ghost.reachable()
        wait_for("the partition heals", lambda: broken_pairs(distributor) == set())
        ghost.cut()
        wait_for("cut again", lambda: broken_pairs(distributor) == {("a", "ghost"), ("b", "ghost")})
    # the ghost left the registry: nothing to show, though the nodes still retry it
    wait_for("gone with the ghost", lambda: broken_pairs(distributor) == set())
    assert full_mesh([a, b])  # the real link never broke


def test_a_restarted_distributor_hears_the_current_report(make_cluster) -> None:
    """The report goes out when the set changes, and again at every registration: a new
    distributor run hears it though nothing changed for the node."""
    cluster = make_cluster()
    distributor = cluster.distributor()
    a = cluster.node("a")
    with GhostPeer(cluster.distributor_port) as ghost:
        wait_for("a reports the ghost", lambda: broken_pairs(distributor) == {("a", "ghost")})
        # the distributor dies: no member_left, so a keeps retrying the ghost, its set the same
        distributor.kill()
        distributor = cluster.distributor()
        wait_for("a registered again", lambda: len(distributor.get("/v1/members")["members"]))
        with GhostPeer(cluster.distributor_port, port=ghost.port, incarnation=2):
            wait_for("the new run shows it", lambda: broken_pairs(distributor) == {("a", "ghost")})
    reports = [line for line in a.logs() if line.get("event") == "link_report"]
    assert len(reports) == 1  # sent once; the new run heard it at registration
