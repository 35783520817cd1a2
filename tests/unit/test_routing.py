"""node/routing.py: which provider gets a routed request."""

from __future__ import annotations

import collections

from node.routing import ProviderPicker


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
