"""node/peertable.py: which link a pair keeps, what a link's end means, when to sync."""

from __future__ import annotations

from node.membership import Changes, Membership
from node.peertable import SYNC_SPACING_BEATS, Applied, Offer, PeerTable, Refusal
from shared.linkend import EndReason, LinkEnd
from shared.looplag import LoopLag
from shared.wire import Departure, Member, MemberLeft, Members, Snapshot

SELF = "m-self"  # ids compare as strings: "a-..." are smaller than us, "z-..." larger
INTERVAL = 1.0
TIMEOUT = 3.0
SPACING = SYNC_SPACING_BEATS * INTERVAL
WINDOW = 30.0

SMALLER = Member("a-peer", "smaller", "10.0.0.1:9010", 1)
LARGER = Member("z-peer", "larger", "10.0.0.2:9010", 1)
OTHER = Member("q-other", "other", "10.0.0.3:9010", 1)

CLOSED = LinkEnd(EndReason.CLOSED, "connection closed by peer")
LEAVE = LinkEnd(EndReason.LEAVE, "peer said goodbye")


class Session:
    """A stand-in for the edge's live link: the table only tells them apart."""


def new_table(lag: LoopLag | None = None) -> PeerTable[Session]:
    return PeerTable(Membership(SELF, WINDOW), lag or LoopLag(), INTERVAL, TIMEOUT)


def with_peers(*members: Member, lag: LoopLag | None = None) -> PeerTable[Session]:
    table = new_table(lag)
    for member in members:
        table.apply(table.membership.learn(member))
    return table


def linked(member: Member, now: float = 0.0) -> tuple[PeerTable[Session], Session]:
    """A table with the member, linked by us at `now` (for a larger id, that is its link)."""
    table = with_peers(member)
    session = Session()
    assert table.offer(member.id, session, dialled_by_us=True, now=now) == (Offer.ACCEPT, None)
    return table, session


# -- members ------------------------------------------------------------------


def test_added_members_become_peers_and_the_smaller_id_dials() -> None:
    table = new_table()
    applied = table.apply(Changes(added=(SMALLER, LARGER)))
    assert [p.member for p in applied.added] == [SMALLER, LARGER]
    assert [p.member for p in applied.dial] == [LARGER]  # the smaller one dials us
    assert set(table.peers) == {SMALLER.id, LARGER.id}
    assert all(p.status.state == "connecting" for p in table.peers.values())


def test_a_newer_record_updates_the_peer_and_is_dialled_again() -> None:
    table = with_peers(LARGER)
    peer = table.peers[LARGER.id]
    newer = Member(LARGER.id, "larger", "10.0.0.9:9010", 2)
    applied = table.apply(Changes(added=(newer,)))
    assert applied.added == ()  # not new: the same peer, with its new address
    assert applied.dial == (peer,) and peer.member == newer


def test_removed_members_are_dropped_and_no_longer_current() -> None:
    table = with_peers(LARGER)
    peer = table.peers[LARGER.id]
    assert table.is_current(peer)
    assert table.apply(Changes(removed=(LARGER.id, "unknown"))).dropped == (peer,)
    assert table.peers == {} and not table.is_current(peer)


def test_a_leaving_node_takes_no_more_members() -> None:
    table = with_peers(LARGER)
    peer = table.peers[LARGER.id]
    table.stop()
    assert not table.is_current(peer)
    assert table.apply(Changes(added=(SMALLER,), removed=(LARGER.id,))) == Applied()
    assert set(table.peers) == {LARGER.id}


# -- links offered ------------------------------------------------------------


def test_a_hello_is_refused_for_ourselves_and_for_an_incarnation_that_left() -> None:
    table = with_peers(LARGER)
    assert table.refusal(Member(SELF, "me", "10.0.0.254:9010", 1)) is Refusal.SELF
    assert table.refusal(LARGER) is None
    table.membership.peer_left(LARGER, now=0.0)
    assert table.refusal(LARGER) is Refusal.STALE
    assert table.refusal(Member(LARGER.id, "larger", LARGER.address, 2)) is None  # newer


def test_the_first_link_of_a_pair_is_accepted_whoever_dialled() -> None:
    for member, dialled_by_us in ((LARGER, True), (SMALLER, False), (SMALLER, True)):
        table = with_peers(member)
        session = Session()
        offer = table.offer(member.id, session, dialled_by_us=dialled_by_us, now=5.0)
        assert offer == (Offer.ACCEPT, None)
        peer = table.peers[member.id]
        assert peer.session is session and peer.linked_at == 5.0
        assert peer.status.state == "connected"
        assert table.membership.first_hand() == [member]  # linked: first-hand now
        assert table.any_linked()


def test_a_link_to_no_member_or_while_leaving_is_not_taken() -> None:
    table = with_peers(LARGER)
    assert table.offer(OTHER.id, Session(), dialled_by_us=False, now=0.0) == (
        Offer.NOT_MEMBER,
        None,
    )
    table.stop()
    assert table.offer(LARGER.id, Session(), dialled_by_us=True, now=0.0) == (
        Offer.NOT_MEMBER,
        None,
    )
    assert table.peers[LARGER.id].session is None


def test_a_link_from_the_larger_id_is_a_duplicate_of_ours() -> None:
    table, ours = linked(LARGER)  # we are the smaller id: we dialled it
    duplicate = Session()
    assert table.offer(LARGER.id, duplicate, dialled_by_us=False, now=1.0) == (
        Offer.DUPLICATE,
        None,
    )
    peer = table.peers[LARGER.id]
    assert peer.session is ours and peer.linked_at == 0.0
    assert table.link_ended(LARGER.id, duplicate, None, 1.0) is None  # changes nothing
    assert peer.session is ours and peer.status.state == "connected"


def test_our_own_dial_to_a_smaller_id_is_a_duplicate_of_its_link() -> None:
    table = with_peers(SMALLER)
    theirs = Session()
    table.offer(SMALLER.id, theirs, dialled_by_us=False, now=0.0)
    # we are the larger id: a seed's dial of ours met the link it dialled
    assert table.offer(SMALLER.id, Session(), dialled_by_us=True, now=1.0) == (
        Offer.DUPLICATE,
        None,
    )
    assert table.peers[SMALLER.id].session is theirs


def test_the_smaller_id_dialling_again_replaces_the_link() -> None:
    table = with_peers(SMALLER)
    old, new = Session(), Session()
    table.offer(SMALLER.id, old, dialled_by_us=False, now=0.0)
    assert table.offer(SMALLER.id, new, dialled_by_us=False, now=7.0) == (Offer.REPLACE, old)
    peer = table.peers[SMALLER.id]
    assert peer.session is new and peer.linked_at == 7.0
    # the old link's end, when its task sees it, is no news: the new one is up
    assert table.link_ended(SMALLER.id, old, CLOSED, 8.0) is None
    assert peer.session is new and peer.status.state == "connected"
    assert table.membership.first_hand() == [SMALLER]


def test_our_dialling_again_replaces_our_link() -> None:
    table, old = linked(LARGER)
    new = Session()
    assert table.offer(LARGER.id, new, dialled_by_us=True, now=2.0) == (Offer.REPLACE, old)
    assert table.peers[LARGER.id].session is new


# -- links ended ----------------------------------------------------------------


def test_a_link_down_leaves_the_member_to_be_retried() -> None:
    table, session = linked(LARGER)
    assert table.link_ended(LARGER.id, session, CLOSED, 1.0) == Changes()
    peer = table.peers[LARGER.id]
    assert peer.session is None and not table.any_linked()
    assert (peer.status.state, peer.status.last_error) == ("retrying", CLOSED.detail)
    assert table.membership.get(LARGER.id) == LARGER
    assert table.membership.first_hand() == []  # no longer linked


def test_a_link_that_never_started_says_so() -> None:
    table, session = linked(LARGER)
    assert table.link_ended(LARGER.id, session, None, 1.0) == Changes()
    assert table.peers[LARGER.id].status.last_error == "link closed"


def test_a_goodbye_drops_the_member_at_once() -> None:
    table, session = linked(LARGER)
    assert table.link_ended(LARGER.id, session, LEAVE, 1.0) == Changes(removed=(LARGER.id,))
    assert table.membership.get(LARGER.id) is None
    assert table.refusal(LARGER) is Refusal.STALE  # the same incarnation cannot come back


def test_a_member_declared_gone_while_linked_is_dropped_when_its_link_dies() -> None:
    table, session = linked(LARGER)
    table.membership.apply_snapshot("d:9000", Snapshot("e", 1, (LARGER,)))
    gone = table.membership.apply_delta("d:9000", MemberLeft(2, LARGER), 1.0)
    assert gone == Changes()  # heartbeats still flow: kept
    assert table.link_ended(LARGER.id, session, CLOSED, 2.0) == Changes(removed=(LARGER.id,))


def test_the_end_of_a_dropped_peers_link_changes_nothing() -> None:
    table, session = linked(LARGER)
    peer = table.peers[LARGER.id]
    table.apply(Changes(removed=(LARGER.id,)))
    assert table.link_ended(LARGER.id, session, CLOSED, 1.0) is None
    assert peer.status.state == "connected"  # nobody shows it any more


# -- anti-entropy -------------------------------------------------------------


def test_a_differing_digest_asks_at_most_once_per_spacing() -> None:
    table, session = linked(LARGER)
    assert not table.heartbeat_received(LARGER.id, session, "2:same", "2:same", 1.0)
    assert table.heartbeat_received(LARGER.id, session, "3:theirs", "2:ours", 1.0)
    assert table.peers[LARGER.id].last_sync_request == 1.0
    for beat in range(1, SYNC_SPACING_BEATS):
        now = 1.0 + beat * INTERVAL
        assert not table.heartbeat_received(LARGER.id, session, "3:theirs", "2:ours", now)
    assert table.heartbeat_received(LARGER.id, session, "3:theirs", "2:ours", 1.0 + SPACING)


def test_a_sync_request_is_answered_at_most_once_per_heartbeat_interval() -> None:
    table, session = linked(LARGER)
    assert table.sync_requested(LARGER.id, session, 10.0)
    assert not table.sync_requested(LARGER.id, session, 10.0 + INTERVAL / 2)
    assert table.sync_requested(LARGER.id, session, 10.0 + INTERVAL)


def test_messages_on_a_link_the_pair_no_longer_keeps_are_not_acted_on() -> None:
    table, old = linked(LARGER)
    table.offer(LARGER.id, Session(), dialled_by_us=True, now=0.0)  # replaced
    assert not table.heartbeat_received(LARGER.id, old, "3:theirs", "2:ours", 10.0)
    assert not table.sync_requested(LARGER.id, old, 10.0)
    assert table.members_received(LARGER.id, old, Members((OTHER,)), 0.0, 0.0) == Changes()
    assert table.membership.get(OTHER.id) is None


def test_a_member_list_is_taken_at_link_start() -> None:
    table, session = linked(LARGER, now=100.0)
    listed = Members((LARGER, OTHER))
    assert table.members_received(LARGER.id, session, listed, 100.0 + TIMEOUT, 0.0) == Changes(
        added=(OTHER,)
    )


def test_a_member_list_unasked_after_link_start_is_ignored() -> None:
    table, session = linked(LARGER, now=100.0)
    listed = Members((LARGER, OTHER), (Departure("x-gone", 1, 0.0),))
    late = 100.0 + TIMEOUT + 0.5
    assert table.members_received(LARGER.id, session, listed, late, 0.0) == Changes()
    assert table.membership.get(OTHER.id) is None and table.membership.tombstones == {}


def test_a_member_list_is_taken_when_we_asked_for_it() -> None:
    table, session = linked(LARGER, now=100.0)
    asked = 200.0
    assert table.heartbeat_received(LARGER.id, session, "3:theirs", "2:ours", asked)
    listed = Members((LARGER, OTHER), (Departure("x-gone", 1, 2.0),))
    changes = table.members_received(LARGER.id, session, listed, asked + TIMEOUT, 50.0)
    assert changes == Changes(added=(OTHER,))
    assert table.membership.tombstones["x-gone"].made_at == 48.0  # the membership's clock


def test_our_own_stalls_stretch_the_wait_for_a_list() -> None:
    lag = LoopLag()
    lag.tick(0.0)
    lag.tick(2.0)  # we stalled 1.9 s just after the link came up
    for step in range(21, 41):
        lag.tick(step / 10)
    table = with_peers(LARGER, lag=lag)
    session = Session()
    table.offer(LARGER.id, session, dialled_by_us=True, now=0.0)
    listed = Members((LARGER, OTHER))
    assert table.members_received(LARGER.id, session, listed, 4.0, 0.0) == Changes(added=(OTHER,))
    unstalled, other_session = linked(LARGER)
    assert unstalled.members_received(LARGER.id, other_session, listed, 4.0, 0.0) == Changes()


def test_a_members_own_record_is_taken_unasked() -> None:
    table, session = linked(LARGER, now=0.0)
    draining = Member(LARGER.id, "larger", LARGER.address, 2, draining=True)
    changes = table.members_received(LARGER.id, session, Members((draining,)), 500.0, 0.0)
    assert changes == Changes(added=(draining,))
    # someone else's record alone is a list, not an announcement: ignored unasked
    assert table.members_received(LARGER.id, session, Members((OTHER,)), 500.0, 0.0) == Changes()
