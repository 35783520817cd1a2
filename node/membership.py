"""A node's view of the mesh: who the other members are. Pure: no sockets, no clock.

Events come in (a distributor's snapshot and deltas, a peer link going up or
down, a peer's own leave, the passing of time as `now`), and each returns the
Changes the node must act on: members to dial or re-dial, members to drop.

The rules (DESIGN.md, "What the words mean"):
- A snapshot drops nothing: a restarted distributor's first snapshots are
  incomplete while nodes re-register.
- Deltas apply in version order per distributor run (epoch); stale ones are
  ignored.
- A departure (member_left, or the member's own leave) leaves a tombstone that
  covers that id up to that incarnation, so it is not brought back.
- A departure of a member whose link is still up does not drop it while
  heartbeats flow; it is remembered, and the member is dropped as soon as the
  link dies. (A crash is often reported by the distributor first.)
- A member that a connected distributor lists is never given up. One that no
  connected distributor lists and that we have no link to is forgotten when
  the retry window ends.
- What others can make us hold is capped (MESH_MAX_MEMBERS members, and as many
  tombstones); beyond, records are refused. Each refusal is counted, and the
  Changes of the event that begins an episode of refusals name the limit, so the
  node warns once per episode, not once per refused record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shared.wire import Departure, Member, MemberJoined, MemberLeft, Members, Snapshot


@dataclass(frozen=True, slots=True)
class Changes:
    added: tuple[Member, ...] = ()  # new members, or a newer incarnation of a known one
    removed: tuple[str, ...] = ()  # ids dropped
    refute: bool = False  # we were declared gone: bump our incarnation
    limits_reached: tuple[str, ...] = ()  # caps that began refusing records: warn

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.refute or self.limits_reached)

    def __add__(self, other: Changes) -> Changes:
        return Changes(
            self.added + other.added,
            self.removed + other.removed,
            self.refute or other.refute,
            self.limits_reached + other.limits_reached,
        )


class Cap:
    """A limit on how many records of a kind we hold; beyond it, a record is refused.

    Every refusal is counted (a metric). An episode runs from the first refusal until
    there is room again (the next record admitted); `began` is set when one starts and
    stays set until the membership reports it in its Changes.
    """

    __slots__ = ("began", "name", "refusals", "refusing", "size")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.refusals = 0  # every record refused, ever
        self.refusing = False  # in an episode: the last record offered was refused
        self.began = False  # an episode began and has not been reported yet

    def admits(self, held: int) -> bool:
        """Whether one more record fits beside the `held` ones; a refusal is counted."""
        if held < self.size:
            self.refusing = False
            return True
        self.refusals += 1
        if not self.refusing:
            self.refusing = self.began = True
        return False


@dataclass(slots=True)
class Known:
    member: Member
    linked: bool = False  # a peer link is up, heartbeats flowing
    departed: bool = False  # declared gone while linked: drop when the link dies
    orphan_since: float | None = None  # unlinked and unlisted since then


@dataclass(frozen=True, slots=True)
class Tombstone:
    incarnation: int
    made_at: float


@dataclass(slots=True)
class _Source:
    """What one connected distributor told us."""

    epoch: str
    version: int
    listed: set[str] = field(default_factory=set)


class Membership:
    def __init__(self, self_id: str, retry_window: float, max_members: int = 10000) -> None:
        self.self_id = self_id
        # bounds on what peers and distributors can make us hold
        self.member_cap = Cap("members", max_members)
        self.tombstone_cap = Cap("tombstones", max_members)
        self.caps = (self.member_cap, self.tombstone_cap)
        # bumped before every registration and whenever we are declared gone
        self.incarnation = 0
        self.retry_window = retry_window
        self.known: dict[str, Known] = {}
        self.tombstones: dict[str, Tombstone] = {}  # authoritative departures; they travel
        self.local_tombstones: dict[str, Tombstone] = {}  # retry windows that ended; they don't
        self._sources: dict[str, _Source] = {}  # distributor address -> its view

    # -- queries -------------------------------------------------------------

    def members(self) -> list[Member]:
        return [k.member for k in self.known.values()]

    def get(self, member_id: str) -> Member | None:
        known = self.known.get(member_id)
        return known.member if known else None

    def is_listed(self, member_id: str) -> bool:
        return any(member_id in source.listed for source in self._sources.values())

    def is_covered(self, member: Member) -> bool:
        """True when a tombstone says this incarnation of the member has left."""
        tomb = self.tombstones.get(member.id)
        return tomb is not None and member.incarnation <= tomb.incarnation

    # -- distributor events --------------------------------------------------

    def apply_snapshot(self, source: str, snapshot: Snapshot) -> Changes:
        listed = {m.id for m in snapshot.members if m.id != self.self_id}
        self._sources[source] = _Source(snapshot.epoch, snapshot.version, listed)
        added = tuple(m for m in snapshot.members if self._learn(m))
        return self._with_limits(Changes(added=added))

    def apply_delta(self, source: str, delta: MemberJoined | MemberLeft, now: float) -> Changes:
        view = self._sources.get(source)
        if view is None or delta.version <= view.version:
            return Changes()  # before any snapshot, or stale
        view.version = delta.version
        member = delta.member
        if isinstance(delta, MemberJoined):
            if member.id == self.self_id:
                return Changes()
            view.listed.add(member.id)
            learned = Changes(added=(member,)) if self._learn(member) else Changes()
            return self._with_limits(learned)
        view.listed.discard(member.id)
        return self._with_limits(
            self._depart(member.id, member.incarnation, now, linked_grace=True)
        )

    def distributor_lost(self, source: str) -> None:
        self._sources.pop(source, None)

    # -- peer link events ----------------------------------------------------

    def learn(self, member: Member) -> Changes:
        """First-hand knowledge of a member (its hello, its announcement): added when it is
        news to us. Its own word also wins at an equal incarnation: a version-1 peer passes
        on records without the fields it does not know (services, tags...)."""
        known = self.known.get(member.id)
        if known is not None and known.member.incarnation == member.incarnation:
            if known.member == member:
                return Changes()
            known.member = member
            return Changes(added=(member,))
        return self._with_limits(Changes(added=(member,)) if self._learn(member) else Changes())

    def link_up(self, member_id: str) -> None:
        """A link to the member is up and its heartbeats flow."""
        known = self.known.get(member_id)
        if known is not None:
            known.linked = True
            known.orphan_since = None

    def link_down(self, member_id: str) -> Changes:
        known = self.known.get(member_id)
        if known is None:
            return Changes()
        known.linked = False
        if known.departed:
            del self.known[member_id]
            return Changes(removed=(member_id,))
        return Changes()

    def peer_left(self, member: Member, now: float) -> Changes:
        """The member said goodbye on its own link: gone at once."""
        return self._with_limits(
            self._depart(member.id, member.incarnation, now, linked_grace=False)
        )

    def refute(self, declared_gone: int) -> Changes:
        """We were declared gone at that incarnation: SWIM's refutation, alive and newer."""
        if declared_gone < self.incarnation:
            return Changes()  # about an incarnation we already left behind
        self.incarnation = declared_gone + 1
        return Changes(refute=True)

    # -- anti-entropy between peers ----------------------------------------------

    def first_hand(self) -> list[Member]:
        """What we may pass on: members we have a live link to or a connected distributor lists."""
        return [k.member for k in self.known.values() if k.linked or self.is_listed(k.member.id)]

    def departures(self, now: float) -> tuple[Departure, ...]:
        return tuple(
            Departure(member_id, tomb.incarnation, max(0.0, now - tomb.made_at))
            for member_id, tomb in self.tombstones.items()
        )

    def merge(self, members: Members, now: float) -> Changes:
        """A peer's Members: its tombstones first (they may cover its members), then members."""
        changes = Changes()
        for departure in members.tombstones:
            if departure.age < self.retry_window:
                made_at = now - departure.age
                changes += self._depart(
                    departure.id, departure.incarnation, made_at, linked_grace=True
                )
        learned = tuple(
            m for m in members.members if not self._covered_locally(m) and self._learn(m)
        )
        return self._with_limits(changes + Changes(added=learned))

    def _covered_locally(self, member: Member) -> bool:
        tomb = self.local_tombstones.get(member.id)
        return tomb is not None and member.incarnation <= tomb.incarnation

    # -- time ----------------------------------------------------------------

    def expire(self, now: float) -> Changes:
        """End retry windows of unreachable, unlisted members; age out tombstones."""
        removed = []
        for member_id, known in list(self.known.items()):
            if known.linked or self.is_listed(member_id):
                known.orphan_since = None
            elif known.orphan_since is None:
                known.orphan_since = now
            elif now - known.orphan_since >= self.retry_window:
                del self.known[member_id]
                removed.append(member_id)
                # local: not passed on (others may still reach it), but peers' lists
                # cannot bring this incarnation back to us
                self.local_tombstones[member_id] = Tombstone(known.member.incarnation, now)
        for tombstones in (self.tombstones, self.local_tombstones):
            for member_id, tomb in list(tombstones.items()):
                if now - tomb.made_at >= self.retry_window:
                    del tombstones[member_id]
        return Changes(removed=tuple(removed))

    # -- rules ---------------------------------------------------------------

    def _learn(self, member: Member) -> bool:
        """Add a member or take its newer incarnation; True when something changed."""
        if member.id == self.self_id or self.is_covered(member):
            return False
        known = self.known.get(member.id)
        if known is None:
            if not self.member_cap.admits(len(self.known)):
                return False
            self.known[member.id] = Known(member)
            return True
        if member.incarnation <= known.member.incarnation:
            return False
        known.member = member
        known.departed = False  # a newer incarnation refutes an older departure
        return True

    def _depart(
        self, member_id: str, incarnation: int, made_at: float, *, linked_grace: bool
    ) -> Changes:
        if member_id == self.self_id:
            return self.refute(incarnation)
        tomb = self.tombstones.get(member_id)
        if tomb is None:
            if self.tombstone_cap.admits(len(self.tombstones)):
                self.tombstones[member_id] = Tombstone(incarnation, made_at)
        elif tomb.incarnation < incarnation:
            # a newer incarnation's departure is a new tombstone; hearing the same one
            # again does not refresh it
            self.tombstones[member_id] = Tombstone(incarnation, made_at)
        known = self.known.get(member_id)
        if known is None or known.member.incarnation > incarnation:
            return Changes()  # unknown, or a newer incarnation is already here
        if linked_grace and known.linked:
            known.departed = True
            return Changes()
        del self.known[member_id]
        return Changes(removed=(member_id,))

    def _with_limits(self, changes: Changes) -> Changes:
        """`changes`, naming the caps whose episode of refusals began while they were made."""
        began = tuple(cap for cap in self.caps if cap.began)
        if not began:
            return changes
        for cap in began:
            cap.began = False
        names = tuple(cap.name for cap in began)
        return replace(changes, limits_reached=changes.limits_reached + names)
