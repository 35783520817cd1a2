"""distributor/registry.py: the event history watchers resume from, and updates (upserts)."""

from __future__ import annotations

import pytest

from distributor.registry import HISTORY, RegistrationRefused, Registry
from shared.wire import Member, MemberJoined, MemberLeft


def member(i: int, incarnation: int = 1, **fields: object) -> Member:
    return Member(f"id-{i}", f"node-{i}", f"10.0.0.{i % 250}:9010", incarnation, **fields)  # type: ignore[arg-type]


def churn(registry: Registry, events: int) -> None:
    """`events` more events: joins of new ids, every third one followed by its leave."""
    done = 0
    i = len(registry) + registry.version
    while done < events:
        registry.register(member(i), now=float(i))
        done += 1
        if done < events and i % 3 == 0:
            registry.unregister(member(i), "closed")
            done += 1
        i += 1


# -- events_after windows --------------------------------------------------------


def test_a_new_registry_has_nothing_after_zero() -> None:
    registry = Registry("e")
    assert registry.events_after(0) == []


def test_none_missed_is_an_empty_list() -> None:
    registry = Registry("e")
    churn(registry, 10)
    assert registry.events_after(registry.version) == []


def test_some_missed_are_the_events_after_in_version_order() -> None:
    registry = Registry("e")
    churn(registry, 10)
    events = registry.events_after(6)
    assert events is not None
    assert [e.version for e in events] == [7, 8, 9, 10]
    assert events == list(registry.history)[-4:]


def test_all_missed_from_zero_while_the_history_holds_them() -> None:
    registry = Registry("e")
    churn(registry, 10)
    events = registry.events_after(0)
    assert events is not None
    assert [e.version for e in events] == list(range(1, 11))


def test_exactly_the_history_length_missed_is_still_served() -> None:
    registry = Registry("e")
    churn(registry, HISTORY + 300)
    assert len(registry.history) == HISTORY
    events = registry.events_after(registry.version - HISTORY)
    assert events is not None
    assert len(events) == HISTORY
    first = registry.version - HISTORY + 1
    assert [e.version for e in events] == list(range(first, registry.version + 1))


def test_one_more_than_the_history_needs_a_snapshot() -> None:
    registry = Registry("e")
    churn(registry, HISTORY + 300)
    assert registry.events_after(registry.version - HISTORY - 1) is None
    assert registry.events_after(0) is None


def test_a_version_from_the_future_needs_a_snapshot() -> None:
    registry = Registry("e")
    churn(registry, 5)
    assert registry.events_after(6) is None
    assert registry.events_after(10**9) is None


def test_history_versions_are_consecutive_after_it_wraps() -> None:
    registry = Registry("e")
    churn(registry, 3 * HISTORY + 7)
    versions = [e.version for e in registry.history]
    assert versions == list(range(registry.version - HISTORY + 1, registry.version + 1))


# -- update: an upsert that never lets an older record win ------------------------


def test_update_with_a_newer_incarnation_replaces_and_keeps_connected_since() -> None:
    registry = Registry("e")
    registry.register(member(1), now=100.0)
    newer = member(1, incarnation=2, services=("web",), tags=("v2",), draining=True)
    joined = registry.update(newer)
    assert joined == MemberJoined(2, newer)
    entry = registry.get("id-1")
    assert entry is not None
    assert entry.member == newer
    assert entry.connected_since == 100.0
    assert registry.version == 2
    assert len(registry) == 1


@pytest.mark.parametrize("incarnation", [1, 2])  # equal, then older than the registered 2
def test_update_with_an_equal_or_older_incarnation_is_ignored(incarnation: int) -> None:
    registry = Registry("e")
    registry.register(member(1, incarnation=2), now=100.0)
    before = list(registry.history)
    assert registry.update(member(1, incarnation=incarnation, tags=("old",))) is None
    entry = registry.get("id-1")
    assert entry is not None and entry.member == member(1, incarnation=2)
    assert registry.version == 1
    assert list(registry.history) == before


def test_update_of_an_unknown_id_is_ignored() -> None:
    registry = Registry("e")
    registry.register(member(1), now=1.0)
    assert registry.update(member(2, incarnation=5)) is None
    assert "id-2" not in registry
    assert registry.version == 1
    assert len(registry.history) == 1


def test_updates_in_a_row_then_a_late_older_one() -> None:
    registry = Registry("e")
    registry.register(member(1), now=1.0)
    assert registry.update(member(1, incarnation=3, tags=("c",))) is not None
    assert registry.update(member(1, incarnation=2, tags=("b",))) is None  # reordered: too late
    entry = registry.get("id-1")
    assert entry is not None and entry.member.tags == ("c",)


def test_an_update_keeps_the_members_place_in_the_list() -> None:
    registry = Registry("e")
    for i in range(3):
        registry.register(member(i), now=float(i))
    registry.update(member(0, incarnation=2, tags=("x",)))
    assert [e.member.id for e in registry.entries()] == ["id-0", "id-1", "id-2"]


# -- history content ---------------------------------------------------------------


def test_history_records_joins_updates_and_leaves_with_their_entries() -> None:
    registry = Registry("e")
    registry.register(member(1), now=10.0)
    registry.register(member(2), now=20.0)
    updated = member(1, incarnation=2, services=("db",))
    registry.update(updated)
    registry.unregister(member(2), "timeout")
    registry.unregister(updated, "leave")
    history = list(registry.history)
    assert [e.version for e in history] == [1, 2, 3, 4, 5]
    assert [type(e.delta) for e in history] == [
        MemberJoined,
        MemberJoined,
        MemberJoined,
        MemberLeft,
        MemberLeft,
    ]
    assert history[0].delta == MemberJoined(1, member(1))
    assert history[0].entry.member == member(1) and history[0].entry.connected_since == 10.0
    # the update: the new record, still connected since the first registration
    assert history[2].delta == MemberJoined(3, updated)
    assert history[2].entry.member == updated and history[2].entry.connected_since == 10.0
    # a leave carries the reason and the entry that left
    assert history[3].delta == MemberLeft(4, member(2), "timeout")
    assert history[3].entry.member == member(2) and history[3].entry.connected_since == 20.0
    assert history[4].delta == MemberLeft(5, updated, "leave")
    assert history[4].entry.member == updated
    assert history[4].entry.document()["services"] == ["db"]


def test_a_replacing_registration_is_a_join_in_the_history() -> None:
    registry = Registry("e")
    registry.register(member(1), now=1.0)
    registry.register(member(1, incarnation=2), now=2.0)
    (first, second) = registry.history
    assert isinstance(second.delta, MemberJoined) and second.version == 2
    assert second.entry.connected_since == 2.0
    assert first.entry.member.incarnation == 1


def test_refusals_and_stale_leaves_leave_no_history() -> None:
    registry = Registry("e", max_members=1)
    registry.register(member(1, incarnation=2), now=1.0)
    with pytest.raises(RegistrationRefused):
        registry.register(member(1, incarnation=1), now=2.0)  # stale
    with pytest.raises(RegistrationRefused):
        registry.register(member(2), now=2.0)  # full
    assert registry.unregister(member(1, incarnation=1), "closed") is None  # not this record
    assert registry.unregister(member(9), "closed") is None  # unknown
    assert [e.version for e in registry.history] == [1]
    assert registry.version == 1
