"""Rolling upgrades: nodes and a distributor of an earlier release (version 2: records as
objects; version 3: records as arrays, without instances) mesh with new ones, each link
speaking what both read."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.procs import http
from harness.waiting import wait_for
from tests.integration.cluster import full_mesh, member_ids, registered_ids, status
from tests.integration.releases import checkout_release, old
from tests.integration.test_instances import register as register_instance
from tests.integration.test_services import post, record_of, seen_everywhere

VERSION_2_RELEASE = "e61df814cf2d9d39b4ccf0f3f71520064a1e5405"  # the last to speak 1..2


def release(commit: str, version: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That release's code, from git; it speaks protocol `version`."""
    root = checkout_release(commit, tmp_path_factory.mktemp(f"version-{version}"))
    assert f"PROTOCOL_VERSION = {version}" in (root / "shared" / "wire.py").read_text()
    return root


@pytest.fixture(scope="module")
def version_2_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release(VERSION_2_RELEASE, 2, tmp_path_factory)


def no_protocol_errors(*procs) -> None:
    for proc in procs:
        assert not [line for line in proc.logs() if line.get("reason") == "protocol"], proc.name


def test_a_version_2_node_meshes_with_new_nodes_and_a_new_distributor(
    make_cluster, version_2_release
) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    new_a = cluster.node("new-a", extra=["--service", "goods"])
    old_node = cluster.node("old", program=old(version_2_release, "node"))
    ids = wait_for("old and new in one mesh", lambda: full_mesh([new_a, old_node]))

    # a node that joins later reaches the old one as a delta, and the new ones as a batch
    new_b = cluster.node("new-b")
    nodes = [new_a, new_b, old_node]
    ids = wait_for("three in one mesh", lambda: full_mesh(nodes))
    assert registered_ids(distributor) == set(ids.values())
    assert post(old_node.http_port, {"to": "new-b", "method": "echo", "body": 1})[:2] == (200, 1)
    assert post(new_b.http_port, {"service": "goods", "method": "ping"})[2] == ids["new-a"]

    # an update goes to the old node as a version-2 record, to new ones as an array
    assert http("PUT", new_a.http_port, "/v1/self", {"tags": ["v3"]})[0] == 200
    wait_for(
        "everyone sees the update",
        lambda: seen_everywhere(distributor, [new_b, old_node], ids["new-a"], tags=["v3"]),
    )

    # a departure reaches the old node too
    new_b.stop()
    wait_for("the old node drops new-b", lambda: ids["new-b"] not in member_ids(old_node))
    no_protocol_errors(distributor, new_a, old_node)


def test_new_nodes_register_with_a_version_2_distributor(make_cluster, version_2_release) -> None:
    cluster = make_cluster(steady=True)
    old_distributor = cluster.distributor(program=old(version_2_release, "distributor"))
    a = cluster.node("a")
    b = cluster.node("b", extra=["--service", "goods"])
    ids = wait_for("a mesh through an old distributor", lambda: full_mesh([a, b]))
    assert registered_ids(old_distributor) == set(ids.values())
    assert post(a.http_port, {"service": "goods", "method": "ping"})[2] == ids["b"]
    assert {m["id"] for m in status(a)["members"]} == {ids["b"]}
    no_protocol_errors(old_distributor, a, b)


# -- version 3 -> 4: instances in records --------------------------------------------

VERSION_3_RELEASE = "d91da051253fc73cd71c6db3d7dbbda5c414d648"  # the last to speak 1..3


@pytest.fixture(scope="module")
def version_3_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release(VERSION_3_RELEASE, 3, tmp_path_factory)


INSTANCE = {"name": "hello", "id": "hello-1", "address": "127.0.0.1", "port": 1234}


def instances_seen(node, member_id: str) -> list[str] | None:
    record = record_of(status(node)["members"], member_id)
    return None if record is None else [i["id"] for i in record.get("instances", [])]


def test_a_version_3_node_meshes_with_nodes_whose_records_carry_instances(
    make_cluster, version_3_release
) -> None:
    """A version-3 reader refuses a record array of ten fields: it gets objects, whose
    `instances` it ignores, and no `deltas` batch with an object in it."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    agent = cluster.node("agent")
    old_node = cluster.node("old", program=old(version_3_release, "node"))
    ids = wait_for("old and new in one mesh", lambda: full_mesh([agent, old_node]))

    assert register_instance(agent, INSTANCE)[0] == 200
    late = cluster.node("late")  # gets the instance in its snapshot, as an array
    nodes = [agent, old_node, late]
    ids = wait_for("three in one mesh", lambda: full_mesh(nodes))
    wait_for("the new node sees the instance", lambda: instances_seen(late, ids["agent"]))
    assert instances_seen(late, ids["agent"]) == ["hello-1"]
    # the old node has the agent's newest record, without what it cannot read
    wait_for(
        "the old node has the agent's record",
        lambda: (
            record_of(status(old_node)["members"], ids["agent"])["incarnation"]
            == status(agent)["incarnation"]
        ),
    )
    assert "instances" not in record_of(status(old_node)["members"], ids["agent"])
    assert post(old_node.http_port, {"to": "agent", "method": "echo", "body": 1})[:2] == (200, 1)
    # a change of an instance is a record update that reaches the old node too
    assert http("PUT", agent.http_port, "/v1/agent/service/deregister/hello-1")[0] == 200
    wait_for("the new node drops it", lambda: instances_seen(late, ids["agent"]) == [])
    wait_for(
        "the old node has that record",
        lambda: (
            record_of(status(old_node)["members"], ids["agent"])["incarnation"]
            == status(agent)["incarnation"]
        ),
    )
    old_node.stop()
    wait_for("the agent drops the old node", lambda: ids["old"] not in member_ids(agent))
    no_protocol_errors(distributor, agent, old_node, late)


def test_new_nodes_with_instances_register_with_a_version_3_distributor(
    make_cluster, version_3_release
) -> None:
    cluster = make_cluster(steady=True)
    old_distributor = cluster.distributor(program=old(version_3_release, "distributor"))
    agent, other = cluster.node("agent"), cluster.node("other")
    ids = wait_for("a mesh through an old distributor", lambda: full_mesh([agent, other]))
    assert register_instance(agent, INSTANCE)[0] == 200
    # the instance reaches the other node through the peer link (anti-entropy)
    wait_for("seen by the peer", lambda: instances_seen(other, ids["agent"]) == ["hello-1"])
    assert registered_ids(old_distributor) == set(ids.values())
    no_protocol_errors(old_distributor, agent, other)
