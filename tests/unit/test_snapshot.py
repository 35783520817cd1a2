"""shared/snapshot.py: a snapshot over the frame cap goes out in parts."""

from __future__ import annotations

import orjson
import pytest

from shared.framing import FrameDecoder, encode_frame
from shared.snapshot import SnapshotAssembler, snapshot_frames
from shared.wire import Member, Snapshot


def members(n: int, name_length: int = 10) -> tuple[Member, ...]:
    return tuple(
        Member(f"id-{i:06d}", "n" * name_length + str(i), f"10.0.{i // 256}.{i % 256}:9010", i)
        for i in range(n)
    )


def parts(snapshot: Snapshot, max_frame: int) -> list[bytes]:
    """The distributor's frames for a snapshot, from each member's record encoded once."""
    records = [orjson.dumps(m.to_dict()) for m in snapshot.members]
    return snapshot_frames(snapshot.epoch, snapshot.version, records, max_frame)


def decoded(frames: list[bytes], max_frame: int) -> list[Snapshot]:
    decoder = FrameDecoder(max_frame)
    decoder.feed(b"".join(frames))
    messages = [decoder.next_message() for _ in frames]
    assert decoder.next_message() is None  # one message per frame, nothing else
    assert all(isinstance(m, Snapshot) for m in messages)
    return messages  # type: ignore[return-value]


@pytest.mark.parametrize(
    "n, max_frame, name_length",
    [(1000, 4096, 10), (500, 1024, 40), (2000, 65536, 200), (300, 700, 250), (50, 300, 1)],
)
def test_parts_fit_under_the_cap_and_rebuild_the_list(
    n: int, max_frame: int, name_length: int
) -> None:
    snapshot = Snapshot("epoch-x", 1234, members(n, name_length))
    frames = parts(snapshot, max_frame)
    assert len(frames) > 1
    assert all(len(f) - 4 <= max_frame for f in frames)  # the body under the cap
    messages = decoded(frames, max_frame)
    for part in messages:
        assert part.epoch == snapshot.epoch
        assert part.version == snapshot.version
        assert part.members  # no empty parts
    assert [p.last for p in messages] == [False] * (len(messages) - 1) + [True]
    assembler = SnapshotAssembler(10000)
    results = [assembler.add(p) for p in messages]
    assert results[:-1] == [None] * (len(messages) - 1)
    assert results[-1] == snapshot


def test_parts_are_full() -> None:
    max_frame = 4096
    frames = parts(Snapshot("e", 1, members(1000)), max_frame)
    # cut as late as the cap allows: not one member per frame
    for data in frames[:-1]:
        assert len(data) - 4 > max_frame - 100


@pytest.mark.parametrize("n", [0, 1, 5, 300])
def test_a_snapshot_under_the_cap_is_one_frame_as_the_encoder_makes_it(n: int) -> None:
    snapshot = Snapshot("e", 3, members(n, 30))
    frames = parts(snapshot, 1024 * 1024)
    assert frames == [encode_frame(snapshot, 1024 * 1024)]  # byte for byte
    assert SnapshotAssembler(10000).add(decoded(frames, 1024 * 1024)[0]) == snapshot


def test_assembler_starts_over_after_the_last_part() -> None:
    first = Snapshot("e", 1, members(300))
    second = Snapshot("e", 2, members(3))
    assembler = SnapshotAssembler(10000)
    for part in decoded(parts(first, 1024), 1024):
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
