"""Splitting member lists (a snapshot, a peer's Members) into frames under the cap,
and putting snapshot parts together again."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from shared.framing import frame
from shared.wire import Member, Members, ProtocolError, Snapshot, encode

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


def snapshot_frames(
    epoch: str, version: int, records: Sequence[bytes], max_frame: int
) -> list[bytes]:
    """A snapshot as whole frames, from each member's JSON encoded once beforehand.

    The distributor sends one to every joining node: joining bytes, rather than
    encoding N member records again per join, keeps a storm at O(N) bytes of work
    a join. Each part is what encode_frame gives for the Snapshot it stands for;
    parts are cut as late as the cap allows.
    """
    head = b'{"type":"snapshot","epoch":%b,"version":%d,"members":[' % (
        orjson.dumps(epoch),
        version,
    )
    room = max_frame - len(head) - len(b'],"last":false}')
    cuts = [0]
    if sum(map(len, records)) + len(records) - 1 > room:  # over the cap: cut into parts
        size = -1  # the first record of a part has no comma before it
        for i, record in enumerate(records):
            if size + len(record) + 1 > room and i > cuts[-1]:
                cuts.append(i)
                size = -1
            size += len(record) + 1
    cuts.append(len(records))
    return [
        frame(
            b'%b%b],"last":%b}'
            % (head, b",".join(records[start:stop]), b"true" if stop == len(records) else b"false"),
            max_frame,
        )
        for start, stop in itertools.pairwise(cuts)
    ]


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
