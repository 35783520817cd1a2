"""The rules of a node's peer links. Pure, like node/membership.py beside it: no sockets,
no tasks, no clock (times are passed in). node/mesh.py runs the links and asks the table.

- One link per pair, dialled by the smaller id. A link offered (dialled by us, or
  accepted from the peer) is taken when the pair has none. When it has one, the pair
  keeps the link its smaller id dialled: a link from the smaller id replaces the current
  one (its dialling again means its old link is dead), one from the larger id is a
  duplicate, closed.
- A link's end: the peer's goodbye drops it at once; any other end is a link down (the
  member is retried, or dropped if it was declared gone meanwhile). Only the pair's
  current link counts: a replaced link's end, or a dropped peer's, changes nothing.
- Anti-entropy: each side sends its member list at link start, then a digest on every
  heartbeat. A differing digest asks for the list at most once per SYNC_SPACING_BEATS
  heartbeats, and a request for ours is answered at most once per heartbeat interval,
  so a quiet mesh costs O(1) per beat. A member list is taken only at link start or
  when we asked (within a heartbeat timeout, plus our own stalls), so a peer cannot
  flood us with lists; a member's own record alone is always taken: a member may
  speak for itself (its PUT /v1/self).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from node.linkstatus import LinkStatus
from node.membership import Changes, Membership
from shared.linkend import EndReason, LinkEnd
from shared.looplag import LoopLag
from shared.wire import Member, Members

SYNC_SPACING_BEATS = 3  # a differing digest asks for the full list at most this often

S = TypeVar("S")  # what the edge runs a live link with (node/mesh.py's Session)


class Offer(enum.Enum):
    """What becomes of a link offered to the table."""

    ACCEPT = "accept"  # the pair had no link: this one is it
    REPLACE = "replace"  # the smaller id dialled again: this one replaces the current link
    DUPLICATE = "duplicate"  # the pair keeps the link its smaller id dialled: close this one
    NOT_MEMBER = "not_member"  # not (or no longer) a member, or we are leaving: close it


class Refusal(enum.Enum):
    """Why a link is refused on its hello alone, before anything is learned from it."""

    SELF = "self"  # our own id: we dialled ourselves (a seed list naming us, say)
    STALE = "stale_incarnation"  # a tombstone covers that incarnation: it has left


@dataclass(eq=False)
class Peer(Generic[S]):
    """One other member and the state of our link to it (as /v1/status shows it)."""

    member: Member
    # connecting | connected | retrying
    status: LinkStatus = field(default_factory=lambda: LinkStatus("connecting"))
    session: S | None = None  # the link the pair keeps, while it is up
    linked_at: float = float("-inf")  # when that link came up
    last_sync_request: float = float("-inf")  # when we last asked it for its members
    last_sync_answer: float = float("-inf")  # when we last sent it ours on request


@dataclass(frozen=True, slots=True)
class Applied(Generic[S]):
    """What a membership change means for the peers: to log, to dial, to close."""

    added: tuple[Peer[S], ...] = ()  # peers new to us
    dial: tuple[Peer[S], ...] = ()  # larger ids, new or with a newer record: we dial them
    dropped: tuple[Peer[S], ...] = ()  # gone: their link and their dialling end


class PeerTable(Generic[S]):
    def __init__(
        self,
        membership: Membership,
        lag: LoopLag,
        heartbeat_interval: float,
        heartbeat_timeout: float,
    ) -> None:
        self.membership = membership
        self.lag = lag  # our own stalls, which stretch the wait for a list we asked for
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.peers: dict[str, Peer[S]] = {}
        self.stopping = False  # we are leaving: no new peers, no new links

    @property
    def self_id(self) -> str:
        return self.membership.self_id

    def stop(self) -> None:
        """We are leaving: take no more members or links."""
        self.stopping = True

    # -- members ---------------------------------------------------------------

    def apply(self, changes: Changes) -> Applied[S]:
        """Peers for added members (or their newer record), none for removed ones."""
        if self.stopping:
            return Applied()
        added, dial, dropped = [], [], []
        for member in changes.added:
            peer = self.peers.get(member.id)
            if peer is None:
                peer = self.peers[member.id] = Peer(member)
                added.append(peer)
            else:
                peer.member = member
            if self.self_id < member.id:  # the smaller id dials
                dial.append(peer)
        for member_id in changes.removed:
            peer = self.peers.pop(member_id, None)
            if peer is not None:
                dropped.append(peer)
        return Applied(tuple(added), tuple(dial), tuple(dropped))

    def is_current(self, peer: Peer[S]) -> bool:
        """Still a peer of ours (its dialling goes on while it is)."""
        return self.peers.get(peer.member.id) is peer and not self.stopping

    def any_linked(self) -> bool:
        return any(peer.session is not None for peer in self.peers.values())

    # -- links -----------------------------------------------------------------

    def refusal(self, hello: Member) -> Refusal | None:
        """Why a link with this hello is refused outright; None when it may be offered."""
        if hello.id == self.self_id:
            return Refusal.SELF
        if self.membership.is_covered(hello):
            return Refusal.STALE
        return None

    def offer(
        self, member_id: str, session: S, *, dialled_by_us: bool, now: float
    ) -> tuple[Offer, S | None]:
        """A link to the member is up past its handshake: is it the pair's link?

        Returns the verdict and, for REPLACE, the link it replaces (to close). A link
        taken is the member's link from `now`: connected, and linked in the membership.
        """
        peer = self.peers.get(member_id)
        if peer is None or self.stopping:
            return Offer.NOT_MEMBER, None
        replaced = peer.session
        if replaced is not None:
            smaller_dialled = (self.self_id < member_id) == dialled_by_us
            if not smaller_dialled:
                return Offer.DUPLICATE, None
        peer.session = session
        peer.linked_at = now
        peer.status.succeeded()
        self.membership.link_up(member_id)
        return (Offer.ACCEPT, None) if replaced is None else (Offer.REPLACE, replaced)

    def link_ended(
        self, member_id: str, session: S, end: LinkEnd | None, now: float
    ) -> Changes | None:
        """The link ended (`end` None: it never started); `now` is the membership's clock.

        Returns the membership's changes when it was the pair's link, else None (nothing
        to do: it was replaced, refused, or its peer dropped).
        """
        peer = self._linked(member_id, session)
        if peer is None:
            return None
        peer.session = None
        peer.status.set("retrying", end.detail if end else "link closed")
        if end is not None and end.reason is EndReason.LEAVE:
            return self.membership.peer_left(peer.member, now)
        return self.membership.link_down(member_id)

    def _linked(self, member_id: str, session: S) -> Peer[S] | None:
        """The member's peer when `session` is the link the pair keeps now."""
        peer = self.peers.get(member_id)
        return peer if peer is not None and peer.session is session else None

    # -- anti-entropy ------------------------------------------------------------

    def members_received(
        self, member_id: str, session: S, members: Members, now: float, membership_now: float
    ) -> Changes:
        """A Members from the member on that link at loop time `now`: the changes it makes
        (`membership_now` is the membership's clock, for the tombstones it carries)."""
        peer = self._linked(member_id, session)
        if peer is None:
            return Changes()
        if _speaks_for_itself(member_id, members):  # its own new record: first-hand
            return self.membership.learn(members.members[0])
        asked = max(peer.linked_at, peer.last_sync_request)
        if now - asked <= self.heartbeat_timeout + self.lag.since(asked, now):
            return self.membership.merge(members, membership_now)
        return Changes()

    def sync_requested(self, member_id: str, session: S, now: float) -> bool:
        """The member asked for our members: True when we send them now."""
        peer = self._linked(member_id, session)
        if peer is None or now - peer.last_sync_answer < self.heartbeat_interval:
            return False
        peer.last_sync_answer = now
        return True

    def heartbeat_received(
        self, member_id: str, session: S, theirs: str, ours: str, now: float
    ) -> bool:
        """A heartbeat with the member's digest: True when we ask for its members now."""
        peer = self._linked(member_id, session)
        spacing = SYNC_SPACING_BEATS * self.heartbeat_interval
        if peer is None or theirs == ours or now - peer.last_sync_request < spacing:
            return False
        peer.last_sync_request = now
        return True


def _speaks_for_itself(member_id: str, members: Members) -> bool:
    """A Members holding only the sender's own record: an announcement, not a list."""
    return (
        len(members.members) == 1 and not members.tombstones and members.members[0].id == member_id
    )
