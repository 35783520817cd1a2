"""distributor/registry.py: registrations as versioned events."""

from __future__ import annotations

import pytest

from distributor.registry import RegistrationRefused, Registry
from shared.framing import FrameDecoder
from shared.wire import Member, MemberJoined, MemberLeft, Snapshot


def member(i: int, incarnation: int = 1) -> Member:
    return Member(f"id-{i}", f"node-{i}", f"10.0.0.{i}:9010", incarnation)


def test_new_registry_is_empty() -> None:
    registry = Registry("epoch-1")
    assert len(registry) == 0
    assert registry.version == 0
    assert registry.snapshot() == Snapshot("epoch-1", 0, ())


def test_register_returns_joined_delta_and_no_replaced_member() -> None:
    registry = Registry("epoch-1")
    delta, replaced = registry.register(member(1), now=100.0)
    assert delta == MemberJoined(1, member(1))
    assert replaced is None
    assert "id-1" in registry
    assert len(registry) == 1
    entry = registry.get("id-1")
    assert entry is not None
    assert entry.member == member(1)
    assert entry.connected_since == 100.0


def test_versions_increase_by_one_per_event_and_epoch_is_kept() -> None:
    registry = Registry("epoch-7")
    versions = []
    for i in range(5):
        delta, _ = registry.register(member(i), now=float(i))
        versions.append(delta.version)
    left = registry.unregister(member(2), "leave")
    assert left is not None
    versions.append(left.version)
    delta, _ = registry.register(member(3, incarnation=2), now=9.0)  # a replacement
    versions.append(delta.version)
    left = registry.unregister(member(0), "timeout")
    assert left is not None
    versions.append(left.version)
    assert versions == list(range(1, 9))
    assert registry.version == 8
    assert registry.epoch == "epoch-7"
    assert registry.snapshot().epoch == "epoch-7"
    assert registry.snapshot().version == 8


def test_unregister_returns_left_delta_with_reason() -> None:
    registry = Registry("e")
    registry.register(member(1), now=0.0)
    registry.register(member(2), now=0.0)
    left = registry.unregister(member(1), "closed")
    assert left == MemberLeft(3, member(1), "closed")
    assert "id-1" not in registry
    assert registry.get("id-1") is None
    assert [e.member for e in registry.entries()] == [member(2)]


def test_unregister_unknown_member_changes_nothing() -> None:
    registry = Registry("e")
    registry.register(member(1), now=0.0)
    assert registry.unregister(member(9), "closed") is None
    assert registry.version == 1
    # twice: the second time it is already gone
    assert registry.unregister(member(1), "leave") is not None
    assert registry.unregister(member(1), "leave") is None
    assert registry.version == 2


def test_newer_incarnation_replaces_without_a_leave() -> None:
    registry = Registry("e")
    registry.register(member(1, incarnation=1), now=1.0)
    registry.register(member(2), now=1.0)
    newer = Member("id-1", "node-1-renamed", "10.0.0.99:9010", 5)
    delta, replaced = registry.register(newer, now=2.0)
    assert isinstance(delta, MemberJoined)
    assert delta == MemberJoined(3, newer)
    assert replaced == member(1, incarnation=1)
    assert len(registry) == 2
    entry = registry.get("id-1")
    assert entry is not None
    assert entry.member == newer
    assert entry.connected_since == 2.0


@pytest.mark.parametrize("incarnation", [3, 2, 0])
def test_equal_or_older_incarnation_is_refused(incarnation: int) -> None:
    registry = Registry("e")
    registry.register(member(1, incarnation=3), now=1.0)
    with pytest.raises(RegistrationRefused) as info:
        registry.register(member(1, incarnation=incarnation), now=2.0)
    assert info.value.code == "stale_incarnation"
    # nothing changed
    assert registry.version == 1
    entry = registry.get("id-1")
    assert entry is not None
    assert entry.member == member(1, incarnation=3)
    assert entry.connected_since == 1.0


def test_capacity_refuses_a_new_member_with_full() -> None:
    registry = Registry("e", max_members=3)
    for i in range(3):
        registry.register(member(i), now=0.0)
    with pytest.raises(RegistrationRefused) as info:
        registry.register(member(3), now=0.0)
    assert info.value.code == "full"
    assert len(registry) == 3
    assert registry.version == 3


def test_full_registry_still_takes_a_replacement() -> None:
    registry = Registry("e", max_members=2)
    registry.register(member(1), now=0.0)
    registry.register(member(2), now=0.0)
    delta, replaced = registry.register(member(2, incarnation=2), now=1.0)
    assert replaced == member(2)
    assert delta.version == 3
    assert len(registry) == 2


def test_room_again_after_a_leave() -> None:
    registry = Registry("e", max_members=1)
    registry.register(member(1), now=0.0)
    registry.unregister(member(1), "leave")
    delta, _ = registry.register(member(2), now=0.0)
    assert delta == MemberJoined(3, member(2))


def test_unregister_of_replaced_registration_returns_none_and_changes_nothing() -> None:
    registry = Registry("e")
    old = member(1, incarnation=1)
    new = member(1, incarnation=2)
    registry.register(old, now=0.0)
    registry.register(new, now=1.0)
    before = registry.snapshot()
    # the old link closes after the replacement: its close emits nothing
    assert registry.unregister(old, "closed") is None
    assert registry.version == 2
    assert registry.snapshot() == before
    entry = registry.get("id-1")
    assert entry is not None
    assert entry.member == new
    # the new registration still leaves normally
    assert registry.unregister(new, "leave") == MemberLeft(3, new, "leave")


def test_snapshot_lists_members_in_registration_order() -> None:
    registry = Registry("epoch-9")
    for i in (5, 3, 8, 1):
        registry.register(member(i), now=float(i))
    registry.unregister(member(3), "leave")
    registry.register(member(8, incarnation=4), now=20.0)  # replaced in place
    snapshot = registry.snapshot()
    assert snapshot == Snapshot("epoch-9", 6, (member(5), member(8, incarnation=4), member(1)))
    assert snapshot.last is True
    assert [e.member for e in registry.entries()] == list(snapshot.members)


def test_snapshot_is_a_copy() -> None:
    registry = Registry("e")
    registry.register(member(1), now=0.0)
    snapshot = registry.snapshot()
    registry.register(member(2), now=0.0)
    assert snapshot.members == (member(1),)
    assert snapshot.version == 1


def test_the_compact_snapshot_is_always_the_registry_as_it_is() -> None:
    """One record store: the compact snapshot a node is sent follows every register,
    update and unregister without anyone keeping a second copy in step."""
    registry = Registry("e1")

    def sent() -> Snapshot:
        decoder = FrameDecoder()
        decoder.feed(b"".join(registry.compact_snapshot_frames(1 << 20)))
        message = decoder.next_message()
        assert isinstance(message, Snapshot) and decoder.next_message() is None
        return message

    for i in range(5):
        registry.register(member(i), now=float(i))
    registry.update(member(2, incarnation=2))
    registry.unregister(member(0), "leave")
    registry.register(member(0, incarnation=3), now=9.0)  # back, at the end
    registry.unregister(member(4), "timeout")
    for snapshot in (sent(), registry.snapshot()):
        assert [(m.id, m.incarnation) for m in snapshot.members] == [
            (m.id, m.incarnation) for m in registry.snapshot().members
        ]
    assert sent() == registry.snapshot()
