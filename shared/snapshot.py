"""Splitting member lists (a snapshot, a peer's Members) into frames under the cap,
and putting snapshot parts together again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

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


def split_snapshot(snapshot: Snapshot, max_frame: int) -> list[Snapshot]:
    """Parts each encoding under max_frame; all but the last have last=False."""
    head = len(encode(replace(snapshot, members=()))) + _HEAD_SLACK
    chunks = _chunks(snapshot.members, head, max_frame)
    return [
        replace(snapshot, members=tuple(chunk), last=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
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
