"""Member lists and deltas as frames under the cap: snapshots (from records encoded once),
batches of deltas, a peer's Members; and putting snapshot parts together again."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from shared.framing import frame
from shared.wire import MAX_INT, Member, Members, ProtocolError, Snapshot, encode

_ITEM_OVERHEAD = 8  # separators and slack per item in a JSON list
_HEAD_SLACK = 16  # the length prefix and the flags a part may add


def _chunks(items: Sequence[Any], head: int, max_frame: int) -> list[list[Any]]:
    """Items (each with to_dict) in runs whose encoding, after `head` bytes, fits max_frame."""
    chunks: list[list[Any]] = [[]]
    size = head
    for item in items:
        item_size = len(orjson.dumps(item.to_dict())) + _ITEM_OVERHEAD
        if chunks[-1] and size + item_size > max_frame:
            chunks.append([])
            size = head
        chunks[-1].append(item)
        size += item_size
    return chunks


def _cuts(items: Sequence[bytes], room: int) -> list[int]:
    """Where to cut encoded items so that each run, joined by commas, fits in `room` bytes
    (an item over `room` alone is a run of its own): [0, ..., len(items)]."""
    cuts = [0]
    if sum(map(len, items)) + len(items) - 1 > room:
        size = -1  # the first item of a run has no comma before it
        for i, item in enumerate(items):
            if size + len(item) + 1 > room and i > cuts[-1]:
                cuts.append(i)
                size = -1
            size += len(item) + 1
    cuts.append(len(items))
    return cuts


def _snapshot_head(epoch: str, version: int) -> bytes:
    return b'{"type":"snapshot","epoch":%b,"version":%d,"members":[' % (
        orjson.dumps(epoch),
        version,
    )


_SNAPSHOT_TAIL = b'],"last":false}'  # the longer of the two tails


def snapshot_frames(
    epoch: str, version: int, records: Sequence[bytes], max_frame: int
) -> list[bytes]:
    """A snapshot as whole frames, from each member's JSON encoded once beforehand.

    The distributor sends one to every joining node: joining bytes, rather than
    encoding N member records again per join, keeps a storm at O(N) bytes of work
    a join. Each part is what encode_frame gives for the Snapshot it stands for;
    parts are cut as late as the cap allows.
    """
    head = _snapshot_head(epoch, version)
    cuts = _cuts(records, max_frame - len(head) - len(_SNAPSHOT_TAIL))
    return [
        frame(
            b'%b%b],"last":%b}'
            % (head, b",".join(records[start:stop]), b"true" if stop == len(records) else b"false"),
            max_frame,
        )
        for start, stop in itertools.pairwise(cuts)
    ]


def deltas_frames(first_version: int, events: Sequence[bytes], max_frame: int) -> list[bytes]:
    """Consecutive deltas (each its `deltas` item, wire.delta_event), the first at
    `first_version`, as `deltas` frames (version 3) under the cap: what encode_frame gives
    for the Deltas they stand for."""
    room = max_frame - len(b'{"type":"deltas","version":%d,"events":[]}' % MAX_INT)
    return [
        frame(
            b'{"type":"deltas","version":%d,"events":[%b]}'
            % (first_version + start, b",".join(events[start:stop])),
            max_frame,
        )
        for start, stop in itertools.pairwise(_cuts(events, room))
    ]


class SnapshotRecords:
    """Every member's record in one wire form, encoded once, and all of them joined once
    per change of the list, not once per snapshot: a snapshot is then bytes copied."""

    def __init__(self, encode_record: Callable[[Member], bytes]) -> None:
        self._encode = encode_record
        self._records: dict[str, bytes] = {}  # member id -> record, in snapshot order
        self._joined: bytearray | None = bytearray()  # the records, comma-separated; None: stale

    def put(self, member: Member) -> None:
        """Add a member, or replace its record (in place)."""
        record = self._encode(member)
        replaced = member.id in self._records
        self._records[member.id] = record
        if replaced:
            self._joined = None
        elif self._joined is not None:
            if len(self._records) > 1:
                self._joined += b","
            self._joined += record

    def remove(self, member_id: str) -> None:
        if self._records.pop(member_id, None) is not None:
            self._joined = None

    def frames(self, epoch: str, version: int, max_frame: int) -> list[bytes]:
        """The snapshot as whole frames, as snapshot_frames would make them."""
        if self._joined is None:
            self._joined = bytearray(b",".join(self._records.values()))
        head = _snapshot_head(epoch, version)
        if len(head) + len(self._joined) + len(_SNAPSHOT_TAIL) > max_frame:  # in parts
            return snapshot_frames(epoch, version, list(self._records.values()), max_frame)
        tail = b'],"last":true}'
        size = len(head) + len(self._joined) + len(tail)
        return [b"".join((size.to_bytes(4, "big"), head, self._joined, tail))]  # one copy


def split_members(members: Members, max_frame: int) -> list[Members]:
    """Frames under max_frame, each merged on its own: tombstones first, so a member they
    cover is never learned on the way."""
    head = len(encode(Members(()))) + _HEAD_SLACK
    tomb_chunks = [c for c in _chunks(members.tombstones, head, max_frame) if c]
    tombstones = [Members((), tuple(chunk)) for chunk in tomb_chunks]
    member_chunks = _chunks(members.members, head, max_frame)
    return tombstones + [Members(tuple(chunk)) for chunk in member_chunks]


class SnapshotAssembler:
    """Collects snapshot parts until the last one arrives, up to `limit` members."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._members: list[Member] = []

    def add(self, part: Snapshot) -> Snapshot | None:
        self._members.extend(part.members)
        if len(self._members) > self.limit:
            raise ProtocolError(f"a snapshot of more than {self.limit} members")
        if not part.last:
            return None
        whole = replace(part, members=tuple(self._members), last=True)
        self._members = []
        return whole
