"""A node at its MESH_MAX_MEMBERS: one warning per episode of refusals, every refusal counted
(the episode logic itself is node/membership.py's, tested in test_membership.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from node.app import Node
from node.config import parse
from node.metrics import NodeCollector
from shared.looplag import LoopLag
from shared.wire import Member, MemberLeft, Members, Snapshot


def member(i: int) -> Member:
    # ids below any node's (uuid hex): the node waits to be dialled and dials no one here
    return Member("0" * i, f"n{i}", f"127.0.0.1:{i}", 1)


def refusals(node: Node) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    families = text_string_to_metric_families(generate_latest(registry).decode())
    family = next(f for f in families if f.name == "mesh_limit_refusals")
    return {sample.labels["limit"]: sample.value for sample in family.samples}


def warnings(logs: list[dict[str, object]]) -> list[tuple[object, object]]:
    """(limit, level) of each limit_reached logged."""
    return [(e["limit"], e["log_level"]) for e in logs if e["event"] == "limit_reached"]


async def test_a_full_node_warns_once_per_episode_and_counts_every_refusal() -> None:
    env = {"MESH_DISTRIBUTORS": "", "MESH_MAX_MEMBERS": "1"}
    node = Node(parse(["--name", "capped", "--port", "0"], env), LoopLag())
    with capture_logs() as logs:
        node.apply(node.membership.merge(Members((member(1), member(2))), 0.0))
        node.apply(node.membership.merge(Members((member(3),)), 0.0))
        node.apply(node.membership.learn(member(4)))
    assert warnings(logs) == [("members", "warning")]
    assert refusals(node) == {"members": 3, "tombstones": 0}

    # room again (a distributor says member 1 left), then full again: a new episode
    node.apply(node.membership.apply_snapshot("d:9000", Snapshot("e", 1, (member(1),))))
    with capture_logs() as logs:
        node.apply(node.membership.apply_delta("d:9000", MemberLeft(2, member(1), "leave"), 0.0))
        node.apply(node.membership.learn(member(5)))
        node.apply(node.membership.learn(member(6)))
    assert warnings(logs) == [("members", "warning")]
    assert refusals(node) == {"members": 4, "tombstones": 0}
