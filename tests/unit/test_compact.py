"""The compact form (protocol version 3 on, 4 with instances): member records as arrays, deltas
in batches, and what each peer gets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from distributor.server import Outgoing, compact_writes
from shared import wire
from shared.framing import FrameDecoder, encode_frame
from shared.snapshot import SnapshotRecords, deltas_frames, snapshot_frames
from tests.unit.test_wire import GOODS  # a member with every field set

PLAIN = wire.Member("c000123-0123456789abcdef", "c123", "127.0.0.1:10123", 1)
SERVICES_ONLY = wire.Member("id-s", "s", "10.0.0.4:9010", 2, services=("goods",))


def records(n: int) -> list[wire.Member]:
    return [
        wire.Member(f"c{i:06d}-{i:016x}", f"c{i}", f"127.0.0.1:{10000 + i}", 1) for i in range(n)
    ]


def read_all(data: bytes, max_frame: int = 1024 * 1024) -> list[wire.Message]:
    decoder = FrameDecoder(max_frame)
    decoder.feed(data)
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


# -- records ------------------------------------------------------------------


@pytest.mark.parametrize("member", [PLAIN, GOODS, SERVICES_ONLY], ids=["plain", "full", "gap"])
def test_a_record_round_trips_as_an_array(member: wire.Member) -> None:
    array = orjson.loads(orjson.dumps(member.to_array()))
    assert wire.Member.from_wire(array) == member
    assert wire.Member.from_wire(member.to_dict()) == member  # either form, read alike


def test_trailing_defaults_are_left_out_and_gaps_hold_their_default() -> None:
    assert PLAIN.to_array() == ["c000123-0123456789abcdef", "c123", "127.0.0.1:10123", 1]
    assert SERVICES_ONLY.to_array() == ["id-s", "s", "10.0.0.4:9010", 2, None, ["goods"]]
    assert len(GOODS.to_array()) == 9


def test_a_plain_record_is_well_under_70_bytes() -> None:
    assert len(orjson.dumps(PLAIN.to_array())) <= 60 < len(orjson.dumps(PLAIN.to_dict()))


def test_each_version_gets_its_form() -> None:
    assert PLAIN.to_wire(2) == PLAIN.to_dict()
    assert PLAIN.to_wire(wire.COMPACT_VERSION) == PLAIN.to_array()
    assert PLAIN.to_wire(wire.COMPACT_VERSION + 1) == PLAIN.to_array()  # a newer peer reads 3 too


BAD_ARRAYS: list[Any] = [
    [],
    ["id", "name", "h:1"],  # too short
    ["id", "name", "h:1", 0, None, [], [], {}, False, "extra"],  # too long
    ["", "name", "h:1", 0],
    ["x" * (wire.MAX_ID + 1), "name", "h:1", 0],
    [1, "name", "h:1", 0],
    ["id", "", "h:1", 0],
    ["id", "name", "no-port", 0],
    ["id", "name", "h:1", -1],
    ["id", "name", "h:1", True],
    ["id", "name", "h:1", wire.MAX_INT],
    ["id", "name", "h:1", 1.5],
    ["id", "name", "h:1", 0, "no-port"],
    ["id", "name", "h:1", 0, None, "goods"],  # services not a list
    ["id", "name", "h:1", 0, None, None],  # a gap must hold the default, not null
    ["id", "name", "h:1", 0, None, ["bad name"]],
    ["id", "name", "h:1", 0, None, ["a", "a"]],
    ["id", "name", "h:1", 0, None, [], ["x"] * 33],
    ["id", "name", "h:1", 0, None, [], [], ["k", "v"]],  # meta not an object
    ["id", "name", "h:1", 0, None, [], [], {"k": 1}],
    ["id", "name", "h:1", 0, None, [], [], {}, 1],  # draining not a boolean
    ["id", "name", "h:1", 0, None, [], [], {f"k{i}": "v" * 500 for i in range(20)}],  # > cap
]


@pytest.mark.parametrize("array", BAD_ARRAYS, ids=range(len(BAD_ARRAYS)))
def test_a_bad_array_is_refused_as_the_object_would_be(array: list[Any]) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.Member.from_wire(array)
    with pytest.raises(wire.ProtocolError):
        wire.decode(orjson.dumps({"type": "member_joined", "version": 1, "member": array}))


@pytest.mark.parametrize("value", ["id", 5, None, True])
def test_a_record_is_an_array_or_an_object(value: Any) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.Member.from_wire(value)


def test_the_record_size_cap_holds_for_arrays() -> None:
    meta = {f"k{i}": "v" * 500 for i in range(17)}
    array = ["id", "name", "h:1", 0, None, [], [], meta]
    assert len(orjson.dumps(array)) > wire.MAX_RECORD
    with pytest.raises(wire.ProtocolError, match="bytes, over"):
        wire.Member.from_wire(array)


# -- messages for each version --------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        wire.Snapshot("e", 3, (PLAIN, GOODS)),
        wire.MemberJoined(4, GOODS),
        wire.MemberLeft(5, PLAIN, "timeout"),
        wire.Members((PLAIN, GOODS)),
        wire.Update(GOODS),
    ],
    ids=lambda m: m.TYPE,
)
def test_an_older_peer_gets_objects_and_a_version_3_peer_arrays(message: wire.Message) -> None:
    old, new = (
        orjson.dumps(orjson.loads(wire.encode(message, v))) for v in (2, wire.PROTOCOL_VERSION)
    )
    assert b'"id":' in old and b'"id":' not in new
    assert wire.encode(message) == wire.encode(message, 1)  # by default, what every version reads
    assert wire.decode(old) == wire.decode(new) == message


# -- batches of deltas ------------------------------------------------------------


def test_a_batch_of_deltas_is_read_as_its_deltas_in_order() -> None:
    deltas = [
        wire.MemberJoined(7, PLAIN),
        wire.MemberLeft(8, GOODS, "leave"),
        wire.MemberJoined(9, GOODS),
    ]
    data = encode_frame(wire.Deltas(7, tuple(deltas)), version=wire.COMPACT_VERSION) + encode_frame(
        wire.MemberJoined(10, PLAIN)
    )
    assert read_all(data) == [*deltas, wire.MemberJoined(10, PLAIN)]


def test_a_batch_is_the_items_the_distributor_joins() -> None:
    deltas = (wire.MemberJoined(7, PLAIN), wire.MemberLeft(8, GOODS, "leave"))
    [joined] = deltas_frames(7, [wire.delta_event(d) for d in deltas], 1024 * 1024)
    assert joined == encode_frame(wire.Deltas(7, deltas), version=wire.COMPACT_VERSION)


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "deltas", "version": 1, "events": []},  # says nothing: never sent
        {"type": "deltas", "version": 1},
        {"type": "deltas", "version": 1, "events": {}},
        {"type": "deltas", "version": -1, "events": [PLAIN.to_array()]},
        {"type": "deltas", "version": wire.MAX_INT - 1, "events": [PLAIN.to_array()] * 2},
        {"type": "deltas", "version": 1, "events": [{"left": PLAIN.to_array()}]},  # no reason
        {"type": "deltas", "version": 1, "events": [{"left": PLAIN.to_array(), "reason": 1}]},
        {"type": "deltas", "version": 1, "events": [{"gone": PLAIN.to_array(), "reason": "x"}]},
        {"type": "deltas", "version": 1, "events": ["id"]},
        {"type": "deltas", "version": 1, "events": [["id", "name", "h:1"]]},
    ],
)
def test_a_bad_batch_is_refused(obj: dict[str, Any]) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode(orjson.dumps(obj))


def test_the_last_version_of_a_batch_may_reach_the_integer_limit() -> None:
    obj = {"type": "deltas", "version": wire.MAX_INT - 2, "events": [PLAIN.to_array()] * 2}
    assert wire.decode(orjson.dumps(obj)) == wire.Deltas(
        wire.MAX_INT - 2,
        (wire.MemberJoined(wire.MAX_INT - 2, PLAIN), wire.MemberJoined(wire.MAX_INT - 1, PLAIN)),
    )


def test_batches_over_the_cap_go_in_parts_that_carry_on_the_versions() -> None:
    cap = 2000
    deltas = [wire.MemberJoined(100 + i, m) for i, m in enumerate(records(200))]
    frames = deltas_frames(100, [wire.delta_event(d) for d in deltas], cap)
    assert len(frames) > 5
    assert all(len(f) - 4 <= cap for f in frames)
    assert read_all(b"".join(frames), cap) == deltas


# -- the distributor's snapshots and flushes --------------------------------------


def test_cached_snapshot_records_give_what_the_encoder_gives() -> None:
    cache = SnapshotRecords(lambda m: orjson.dumps(m.to_array()))
    members = records(5)
    for member in members:
        cache.put(member)
    cache.put(GOODS)
    cache.remove(members[1].id)
    cache.put(wire.Member(members[3].id, "renamed", "h:1", 2))  # replaced in place
    expected = (members[0], members[2], wire.Member(members[3].id, "renamed", "h:1", 2), members[4])
    [frame] = cache.frames("epoch", 9, 1024 * 1024)
    assert frame == encode_frame(
        wire.Snapshot("epoch", 9, (*expected, GOODS)), version=wire.COMPACT_VERSION
    )
    cache.put(PLAIN)  # appended to what was joined again
    [frame] = cache.frames("epoch", 10, 1024 * 1024)
    assert frame == encode_frame(
        wire.Snapshot("epoch", 10, (*expected, GOODS, PLAIN)), version=wire.COMPACT_VERSION
    )


def test_cached_snapshot_records_go_in_parts_over_the_cap() -> None:
    cache = SnapshotRecords(lambda m: orjson.dumps(m.to_array()))
    members = records(100)
    for member in members:
        cache.put(member)
    encoded = [orjson.dumps(m.to_array()) for m in members]
    assert cache.frames("e", 1, 1000) == snapshot_frames("e", 1, encoded, 1000)
    assert len(cache.frames("e", 1, 1000)) > 1


def outgoing(delta: wire.MemberJoined | wire.MemberLeft) -> Outgoing:
    return Outgoing(encode_frame(delta), 1, wire.delta_event(delta), 1, delta.version)


def test_a_version_3_link_gets_runs_of_deltas_in_batches_and_whole_frames_as_they_are() -> None:
    snapshot = encode_frame(wire.Snapshot("e", 2, (PLAIN,)), version=wire.COMPACT_VERSION)
    outbox = [
        outgoing(wire.MemberJoined(1, PLAIN)),
        outgoing(wire.MemberJoined(2, GOODS)),
        Outgoing(b"", 0, snapshot, 1),
        outgoing(wire.MemberLeft(3, PLAIN, "closed")),
    ]
    data, count = compact_writes(outbox, 1024 * 1024)
    assert count == 3
    assert data == b"".join(
        (
            encode_frame(
                wire.Deltas(1, (wire.MemberJoined(1, PLAIN), wire.MemberJoined(2, GOODS))),
                version=wire.COMPACT_VERSION,
            ),
            snapshot,
            encode_frame(
                wire.Deltas(3, (wire.MemberLeft(3, PLAIN, "closed"),)), version=wire.COMPACT_VERSION
            ),
        )
    )
