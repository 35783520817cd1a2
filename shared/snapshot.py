"""Splitting a snapshot into frames under the cap, and putting the parts together again."""

from __future__ import annotations

from dataclasses import replace

import orjson

from shared.wire import Member, ProtocolError, Snapshot, encode

_MEMBER_OVERHEAD = 8  # separators and slack per member in the JSON list


def split_snapshot(snapshot: Snapshot, max_frame: int) -> list[Snapshot]:
    """Parts each encoding under max_frame; all but the last have last=False."""
    head = len(encode(replace(snapshot, members=()))) + 16
    parts: list[Snapshot] = []
    chunk: list[Member] = []
    size = head
    for member in snapshot.members:
        member_size = len(orjson.dumps(member.to_dict())) + _MEMBER_OVERHEAD
        if chunk and size + member_size > max_frame:
            parts.append(replace(snapshot, members=tuple(chunk), last=False))
            chunk, size = [], head
        chunk.append(member)
        size += member_size
    parts.append(replace(snapshot, members=tuple(chunk), last=True))
    return parts


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
