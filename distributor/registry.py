"""The registry: who is registered, as versioned events. Pure state, no I/O, no clock.

Every change bumps the version and comes back as the delta to send to every
other node, so one event costs O(N) bytes in all. The epoch names this run of
the distributor: a node that sees a new epoch knows versions started over.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.snapshot import SnapshotRecords
from shared.timefmt import rfc3339
from shared.wire import BrokenLink, Member, MemberJoined, MemberLeft, Snapshot

HISTORY = 1024  # events kept for watchers that reconnect (SSE's Last-Event-ID)


class RegistrationRefused(Exception):
    """A hello the registry will not accept; `code` is the error frame's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Entry:
    member: Member
    connected_since: float  # wall-clock seconds, passed in by the caller
    # the member's JSON, encoded once here rather than in every snapshot that lists it
    record: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", orjson.dumps(self.member.to_dict()))

    def document(self) -> dict[str, Any]:
        """The record as /v1/members shows it: every field, and since when it is connected."""
        return {**self.member.document(), "connected_since": rfc3339(self.connected_since)}


@dataclass(frozen=True, slots=True)
class Event:
    """One change, as watchers see it: member_joined (a join or an update) or member_left."""

    delta: MemberJoined | MemberLeft
    entry: Entry  # the record that joined, or the one that left

    @property
    def version(self) -> int:
        return self.delta.version


class Registry:
    def __init__(self, epoch: str, max_members: int = 10000) -> None:
        self.epoch = epoch
        self.max_members = max_members
        self.version = 0
        self._entries: dict[str, Entry] = {}
        # the last HISTORY events, oldest first, versions consecutive
        self.history: collections.deque[Event] = collections.deque(maxlen=HISTORY)
        # every record in the compact wire form, kept by _record and unregister, the two
        # places the entries change: a snapshot for a node is then bytes copied
        self._compact = SnapshotRecords(lambda member: orjson.dumps(member.to_array()))
        # what each member last reported of its own peer links (link_report)
        self._reports: dict[str, tuple[BrokenLink, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, member_id: str) -> bool:
        return member_id in self._entries

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, member_id: str) -> Entry | None:
        return self._entries.get(member_id)

    def register(self, member: Member, now: float) -> tuple[MemberJoined, Member | None]:
        """Add or replace a member; returns the delta and the record it replaced, if any.

        A newer incarnation of a registered id replaces the old entry (sent on
        as member_joined, never as a leave); an equal or older one is an
        attempt from before a freeze and is refused.
        """
        old = self._entries.get(member.id)
        if old is not None and member.incarnation <= old.member.incarnation:
            raise RegistrationRefused(
                "stale_incarnation",
                f"incarnation {member.incarnation} is not newer than {old.member.incarnation}",
            )
        if old is None and len(self._entries) >= self.max_members:
            raise RegistrationRefused("full", f"the registry is full ({self.max_members} members)")
        return self._record(Entry(member, now)), old.member if old else None

    def update(self, member: Member) -> MemberJoined | None:
        """A registered member's new record (services, tags, draining...): an upsert.

        None when it is stale (not a newer incarnation of the registered entry) or
        the id is not registered: an old record never replaces a newer one.
        """
        old = self._entries.get(member.id)
        if old is None or member.incarnation <= old.member.incarnation:
            return None
        return self._record(Entry(member, old.connected_since))

    def unregister(self, member: Member, reason: str) -> MemberLeft | None:
        """Remove exactly this registration; None when it was already replaced or gone."""
        entry = self._entries.get(member.id)
        # the very record registered, as a rule: compared field by field only otherwise
        if entry is None or (entry.member is not member and entry.member != member):
            return None
        del self._entries[member.id]
        self._compact.remove(member.id)
        self._reports.pop(member.id, None)
        self.version += 1
        left = MemberLeft(self.version, member, reason)
        self.history.append(Event(left, entry))
        return left

    def compact_snapshot_frames(self, max_frame: int) -> list[bytes]:
        """The snapshot of every record now, in the compact form, as whole frames."""
        return self._compact.frames(self.epoch, self.version, max_frame)

    def _record(self, entry: Entry) -> MemberJoined:
        self._entries[entry.member.id] = entry
        self._compact.put(entry.member)
        self.version += 1
        joined = MemberJoined(self.version, entry.member)
        self.history.append(Event(joined, entry))
        return joined

    def events_after(self, version: int) -> list[Event] | None:
        """The events after `version`, or None when some of them are no longer kept
        (or `version` is from the future): the watcher needs a new snapshot then."""
        if version > self.version:
            return None
        missed = self.version - version
        if missed > len(self.history):
            return None
        return [self.history[-i] for i in range(missed, 0, -1)]  # from the right: O(missed)

    def report_links(self, member_id: str, broken: tuple[BrokenLink, ...]) -> None:
        """A registered member's peer links that are down (its whole set, replacing the last)."""
        if member_id in self._entries:
            if broken:
                self._reports[member_id] = broken
            else:
                self._reports.pop(member_id, None)

    def broken_links(self) -> list[tuple[Entry, Entry, BrokenLink]]:
        """(from, to, link) for every reported link between two registered members: both
        registered, yet one cannot reach the other (a partial partition)."""
        found = []
        for member_id, broken in self._reports.items():
            source = self._entries[member_id]
            for link in broken:
                target = self._entries.get(link.to)
                if target is not None:
                    found.append((source, target, link))
        return found

    def records(self) -> list[bytes]:
        """Every member's encoded JSON, in snapshot order (see shared.snapshot.snapshot_frames)."""
        return [e.record for e in self._entries.values()]

    def snapshot(self) -> Snapshot:
        return Snapshot(self.epoch, self.version, tuple(e.member for e in self._entries.values()))
