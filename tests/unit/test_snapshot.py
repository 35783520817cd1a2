"""shared/snapshot.py: a snapshot over the frame cap goes out in parts."""

from __future__ import annotations

import pytest

from shared.framing import FrameDecoder, encode_frame
from shared.snapshot import SnapshotAssembler, split_snapshot
from shared.wire import Member, Snapshot


def members(n: int, name_length: int = 10) -> tuple[Member, ...]:
    return tuple(
        Member(f"id-{i:06d}", "n" * name_length + str(i), f"10.0.{i // 256}.{i % 256}:9010", i)
        for i in range(n)
    )


@pytest.mark.parametrize(
    "n, max_frame, name_length",
    [(1000, 4096, 10), (500, 1024, 40), (2000, 65536, 200), (300, 700, 255), (50, 300, 1)],
)
def test_parts_fit_under_the_cap_and_rebuild_the_list(
    n: int, max_frame: int, name_length: int
) -> None:
    snapshot = Snapshot("epoch-x", 1234, members(n, name_length))
    parts = split_snapshot(snapshot, max_frame)
    assert len(parts) > 1
    for part in parts:
        data = encode_frame(part, max_frame)  # raises if the body is over the cap
        assert len(data) <= max_frame  # the 4-byte prefix included
        assert part.epoch == snapshot.epoch
        assert part.version == snapshot.version
        assert part.members  # no empty parts
    assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True]
    assembler = SnapshotAssembler(10000)
    results = [assembler.add(p) for p in parts]
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1] == snapshot


def test_parts_survive_the_wire() -> None:
    snapshot = Snapshot("e", 9, members(400))
    max_frame = 2048
    decoder = FrameDecoder(max_frame)
    decoder.feed(b"".join(encode_frame(p, max_frame) for p in split_snapshot(snapshot, max_frame)))
    assembler = SnapshotAssembler(10000)
    whole = None
    while (message := decoder.next_message()) is not None:
        assert isinstance(message, Snapshot)
        assert whole is None  # nothing after the last part
        whole = assembler.add(message)
    assert whole == snapshot


def test_parts_are_reasonably_full() -> None:
    snapshot = Snapshot("e", 1, members(1000))
    max_frame = 4096
    parts = split_snapshot(snapshot, max_frame)
    # every part but the last is at least half full: not one member per frame
    for part in parts[:-1]:
        assert len(encode_frame(part, max_frame)) > max_frame // 2


def test_small_snapshot_is_one_part() -> None:
    snapshot = Snapshot("e", 3, members(5))
    assert split_snapshot(snapshot, 1024 * 1024) == [snapshot]


def test_empty_snapshot_is_one_part() -> None:
    snapshot = Snapshot("e", 0, ())
    parts = split_snapshot(snapshot, 1024)
    assert parts == [Snapshot("e", 0, (), last=True)]
    assert SnapshotAssembler(10000).add(parts[0]) == snapshot


def test_assembler_starts_over_after_the_last_part() -> None:
    first = Snapshot("e", 1, members(300))
    second = Snapshot("e", 2, members(3))
    assembler = SnapshotAssembler(10000)
    for part in split_snapshot(first, 1024):
        result = assembler.add(part)
    assert result == first
    assert assembler.add(second) == second  # nothing left over from the first


def test_assembler_refuses_more_members_than_its_limit() -> None:
    from shared.wire import Member, ProtocolError, Snapshot

    members = tuple(Member(f"id-{i}", "n", "h:1") for i in range(3))
    assembler = SnapshotAssembler(2)
    with pytest.raises(ProtocolError):
        assembler.add(Snapshot("e", 1, members, last=False))


def test_split_members_fits_the_cap_with_tombstones_first() -> None:
    from shared.framing import encode_frame
    from shared.snapshot import split_members
    from shared.wire import Departure, Member, Members

    members = tuple(Member(f"id-{i:04d}", "n" * 200, "h:1", i) for i in range(60))
    tombs = tuple(Departure(f"gone-{i}", i, 1.0) for i in range(200))
    parts = split_members(Members(members, tombs), 4096)
    assert len(parts) > 2
    for part in parts:
        assert len(encode_frame(part, 4096)) <= 4096
    assert [t for p in parts for t in p.tombstones] == list(tombs)
    assert [m for p in parts for m in p.members] == list(members)
    first_member_part = next(i for i, p in enumerate(parts) if p.members)
    assert all(not p.tombstones for p in parts[first_member_part:])
