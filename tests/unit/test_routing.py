"""node/routing.py: which provider, or which instance, gets a routed request."""

from __future__ import annotations

import collections

from node.routing import ProviderPicker, healthiest, routable_instances
from shared.wire import Instance, Member


def test_no_candidate_is_none() -> None:
    assert ProviderPicker().pick("goods", {}) is None


def test_fewest_in_flight_wins() -> None:
    picker = ProviderPicker()
    for _ in range(10):
        assert picker.pick("goods", {"a": 3, "b": 1, "c": 2}) == "b"


def test_round_robin_among_equals() -> None:
    picker = ProviderPicker()
    picks = [picker.pick("goods", {"a": 0, "b": 0, "c": 0}) for _ in range(9)]
    assert collections.Counter(picks) == {"a": 3, "b": 3, "c": 3}
    assert picks[:3] == sorted(picks[:3])  # one each per round, in id order


def test_equals_only_share_the_turns() -> None:
    picker = ProviderPicker()
    picks = [picker.pick("goods", {"a": 0, "b": 5, "c": 0}) for _ in range(6)]
    assert collections.Counter(picks) == {"a": 3, "c": 3}


def test_turns_are_per_service() -> None:
    picker = ProviderPicker()
    assert picker.pick("goods", {"a": 0, "b": 0}) == "a"
    assert picker.pick("stock", {"a": 0, "b": 0}) == "a"  # its own first turn
    assert picker.pick("goods", {"a": 0, "b": 0}) == "b"


def test_load_follows_in_flight_counts() -> None:
    """Simulated: a slow provider keeps its requests longer, so it gets fewer."""
    picker = ProviderPicker()
    in_flight = {"fast": 0, "slow": 0}
    served = collections.Counter()
    for step in range(300):
        chosen = picker.pick("goods", in_flight)
        assert chosen is not None
        in_flight[chosen] += 1
        served[chosen] += 1
        in_flight["fast"] = 0  # answers at once
        if step % 5 == 0:
            in_flight["slow"] = 0  # answers every fifth step
    assert served["fast"] > 2 * served["slow"] > 0


# -- the gateway's choice of instance ----------------------------------------------------


def instance(iid: str, health: str, service: str = "hello") -> Instance:
    return Instance(iid, service, "10.0.0.9", 3000, health=health)


def agent(aid: str, *instances: Instance, draining: bool = False) -> Member:
    return Member(aid, aid, f"10.0.0.{len(aid)}:9010", 1, draining=draining, instances=instances)


def test_only_reachable_not_draining_agents_and_not_critical_instances_are_routable() -> None:
    records = [
        (agent("a", instance("h1", "passing"), instance("h2", "critical")), True),
        (agent("b", instance("h3", "warning"), instance("x", "passing", "other")), True),
        (agent("c", instance("h4", "passing")), False),  # its link is down
        (agent("d", instance("h5", "passing"), draining=True), True),
    ]
    routable = routable_instances("hello", records)
    assert {key: health for key, (_, health) in routable.items()} == {
        "a/h1": "passing",
        "b/h3": "warning",
    }
    assert routable["a/h1"][0].port == 3000


def test_passing_instances_before_warning_ones() -> None:
    assert healthiest({"a/1": "warning", "b/1": "passing", "c/1": "passing"}) == ["b/1", "c/1"]
    assert healthiest({"a/1": "warning", "b/1": "critical"}) == ["a/1"]
    assert healthiest({"b/1": "critical"}) == []


def test_the_gateway_spreads_by_in_flight_then_turns() -> None:
    picker = ProviderPicker()
    keys = healthiest({"a/1": "passing", "b/1": "passing", "c/1": "warning"})
    picks = [picker.pick("hello", dict.fromkeys(keys, 0)) for _ in range(4)]
    assert picks == ["a/1", "b/1", "a/1", "b/1"]  # never the warning one while two pass
    assert picker.pick("hello", {"a/1": 2, "b/1": 1}) == "b/1"
