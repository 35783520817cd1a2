"""node/membership.py: a node's view of the mesh, driven by events and `now`."""

from __future__ import annotations

from dataclasses import replace

from node.membership import Cap, Changes, Membership, Tombstone
from shared.wire import Departure, Member, MemberJoined, MemberLeft, Members, Snapshot

SELF = "id-self"
D1 = "distributor:9000"
D2 = "distributor-b:9000"
WINDOW = 30.0


def m(i: int, incarnation: int = 1) -> Member:
    return Member(f"id-{i}", f"node-{i}", f"10.0.0.{i}:9010", incarnation)


ME = Member(SELF, "me", "10.0.0.254:9010", 4)


def ids(membership: Membership) -> set[str]:
    return {member.id for member in membership.members()}


def new(window: float = WINDOW) -> Membership:
    return Membership(SELF, window)


def snap(version: int, *members: Member, epoch: str = "epoch-1") -> Snapshot:
    return Snapshot(epoch, version, tuple(members))


# -- changes ------------------------------------------------------------------


def test_changes_truthiness_and_sum() -> None:
    assert not Changes()
    assert Changes(added=(m(1),))
    assert Changes(removed=("x",))
    assert Changes(refute=True)
    assert Changes(limits_reached=("members",))
    total = Changes(added=(m(1),)) + Changes(removed=("id-2",), refute=True)
    assert total == Changes(added=(m(1),), removed=("id-2",), refute=True)
    both = Changes(limits_reached=("members",)) + Changes(limits_reached=("tombstones",))
    assert both.limits_reached == ("members", "tombstones")


# -- snapshots ----------------------------------------------------------------


def test_snapshot_adds_members_excluding_self() -> None:
    ms = new()
    changes = ms.apply_snapshot(D1, snap(3, m(1), ME, m(2)))
    assert changes == Changes(added=(m(1), m(2)))
    assert ids(ms) == {"id-1", "id-2"}
    assert ms.get(SELF) is None
    assert ms.get("id-1") == m(1)
    assert ms.is_listed("id-1") and ms.is_listed("id-2")
    assert not ms.is_listed(SELF)


def test_same_snapshot_again_adds_nothing() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(3, m(1), m(2)))
    assert ms.apply_snapshot(D1, snap(3, m(1), m(2))) == Changes()
    assert ids(ms) == {"id-1", "id-2"}


def test_snapshot_with_newer_incarnation_updates_the_record() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(3, m(1, 1)))
    changes = ms.apply_snapshot(D1, snap(4, m(1, 2)))
    assert changes == Changes(added=(m(1, 2),))
    assert ms.get("id-1") == m(1, 2)
    # an older incarnation does not go back
    assert ms.apply_snapshot(D1, snap(5, m(1, 1))) == Changes()
    assert ms.get("id-1") == m(1, 2)


def test_snapshot_drops_nothing() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(3, m(1), m(2), m(3)))
    changes = ms.apply_snapshot(D1, snap(4, m(1)))
    assert changes.removed == ()
    assert ids(ms) == {"id-1", "id-2", "id-3"}
    # but those it lacks are no longer listed
    assert not ms.is_listed("id-2")
    assert ms.is_listed("id-1")


# -- deltas -------------------------------------------------------------------


def test_deltas_apply_in_order() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(5, m(1)))
    assert ms.apply_delta(D1, MemberJoined(6, m(2)), now=1.0) == Changes(added=(m(2),))
    assert ms.is_listed("id-2")
    assert ms.apply_delta(D1, MemberLeft(7, m(1), "leave"), now=2.0) == Changes(removed=("id-1",))
    assert not ms.is_listed("id-1")
    assert ms.apply_delta(D1, MemberJoined(8, m(3)), now=3.0) == Changes(added=(m(3),))
    assert ids(ms) == {"id-2", "id-3"}


def test_stale_and_duplicate_versions_ignored() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(5, m(1)))
    # at or below the snapshot's version: already in it
    assert ms.apply_delta(D1, MemberJoined(5, m(2)), now=0.0) == Changes()
    assert ms.apply_delta(D1, MemberJoined(3, m(3)), now=0.0) == Changes()
    assert ms.apply_delta(D1, MemberLeft(4, m(1), "closed"), now=0.0) == Changes()
    assert ids(ms) == {"id-1"}
    assert ms.apply_delta(D1, MemberJoined(6, m(2)), now=0.0) == Changes(added=(m(2),))
    # the same version again (a duplicate) is ignored, whatever it says
    assert ms.apply_delta(D1, MemberLeft(6, m(2), "closed"), now=0.0) == Changes()
    assert ms.apply_delta(D1, MemberJoined(6, m(4)), now=0.0) == Changes()
    assert ids(ms) == {"id-1", "id-2"}
    assert "id-2" not in ms.tombstones


def test_delta_before_any_snapshot_is_ignored() -> None:
    ms = new()
    assert ms.apply_delta(D1, MemberJoined(1, m(1)), now=0.0) == Changes()
    ms.apply_snapshot(D2, snap(1))
    # another distributor's snapshot does not open D1's stream
    assert ms.apply_delta(D1, MemberJoined(2, m(1)), now=0.0) == Changes()
    assert ids(ms) == set()


def test_versions_are_tracked_per_distributor() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(10, epoch="a"))
    ms.apply_snapshot(D2, snap(2, epoch="b"))
    assert ms.apply_delta(D2, MemberJoined(3, m(1)), now=0.0) == Changes(added=(m(1),))
    # D1 is at 10: its version 3 is stale even though D2 took one
    assert ms.apply_delta(D1, MemberJoined(3, m(2)), now=0.0) == Changes()
    assert ms.apply_delta(D1, MemberJoined(11, m(2)), now=0.0) == Changes(added=(m(2),))


def test_joined_naming_self_is_ignored() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1))
    assert ms.apply_delta(D1, MemberJoined(2, ME), now=0.0) == Changes()
    assert ids(ms) == set()
    assert not ms.is_listed(SELF)
    # the version was still consumed
    assert ms.apply_delta(D1, MemberJoined(2, m(1)), now=0.0) == Changes()


def test_new_epoch_snapshot_resets_version_tracking() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(100, m(1), epoch="old"))
    ms.distributor_lost(D1)
    # the restarted distributor counts from the start again
    ms.apply_snapshot(D1, snap(2, m(1), epoch="new"))
    assert ms.apply_delta(D1, MemberJoined(3, m(2)), now=0.0) == Changes(added=(m(2),))
    assert ms.apply_delta(D1, MemberJoined(4, m(3)), now=0.0) == Changes(added=(m(3),))
    assert ids(ms) == {"id-1", "id-2", "id-3"}


def test_new_epoch_snapshot_without_distributor_lost_also_resets() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(100, epoch="old"))
    ms.apply_snapshot(D1, snap(0, epoch="new"))
    assert ms.apply_delta(D1, MemberJoined(1, m(7)), now=0.0) == Changes(added=(m(7),))


# -- departures and tombstones ------------------------------------------------


def test_member_left_drops_an_unlinked_member_and_leaves_a_tombstone() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 3), m(2)))
    changes = ms.apply_delta(D1, MemberLeft(2, m(1, 3), "timeout"), now=50.0)
    assert changes == Changes(removed=("id-1",))
    assert ids(ms) == {"id-2"}
    assert ms.tombstones["id-1"] == Tombstone(3, 50.0)
    assert ms.is_covered(m(1, 3))
    assert ms.is_covered(m(1, 0))
    assert not ms.is_covered(m(1, 4))


def test_member_left_of_unknown_member_still_leaves_a_tombstone() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1))
    assert ms.apply_delta(D1, MemberLeft(2, m(9, 2), "leave"), now=5.0) == Changes()
    assert ms.tombstones["id-9"] == Tombstone(2, 5.0)
    # so it is not brought back by someone who has not heard yet
    assert ms.learn(m(9, 2)) == Changes()
    assert ids(ms) == set()


def test_member_left_of_an_older_incarnation_keeps_the_newer_one() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 5)))
    assert ms.apply_delta(D1, MemberLeft(2, m(1, 4), "closed"), now=0.0) == Changes()
    assert ms.get("id-1") == m(1, 5)
    assert not ms.is_covered(m(1, 5))


def test_member_left_covers_a_lower_known_incarnation() -> None:
    # member_left covers the incarnation it names "or lower"
    ms = new()
    ms.learn(m(1, 2))
    ms.apply_snapshot(D1, snap(1))
    assert ms.apply_delta(D1, MemberLeft(2, m(1, 6), "closed"), now=0.0) == Changes(
        removed=("id-1",)
    )


def test_tombstone_blocks_same_or_lower_incarnation_everywhere() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 3)))
    ms.apply_delta(D1, MemberLeft(2, m(1, 3), "leave"), now=0.0)
    for incarnation in (3, 2, 0):
        stale = m(1, incarnation)
        assert ms.learn(stale) == Changes()
        assert ms.apply_snapshot(D2, snap(1, stale)) == Changes()
        assert ms.apply_delta(D2, MemberJoined(2, stale), now=0.0) == Changes()
        ms.distributor_lost(D2)
        assert ms.get("id-1") is None


def test_tombstone_does_not_block_a_higher_incarnation() -> None:
    for via in ("learn", "snapshot", "joined"):
        ms = new()
        ms.apply_snapshot(D1, snap(1, m(1, 3)))
        ms.apply_delta(D1, MemberLeft(2, m(1, 3), "closed"), now=0.0)
        newer = m(1, 4)
        if via == "learn":
            changes = ms.learn(newer)
        elif via == "snapshot":
            changes = ms.apply_snapshot(D2, snap(1, newer))
        else:
            changes = ms.apply_delta(D1, MemberJoined(3, newer), now=0.0)
        assert changes == Changes(added=(newer,)), via
        assert ms.get("id-1") == newer


def test_member_left_while_linked_waits_for_link_down() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1), m(2)))
    ms.link_up("id-1")
    assert ms.apply_delta(D1, MemberLeft(2, m(1), "timeout"), now=0.0) == Changes()
    assert "id-1" in ids(ms)  # heartbeats still flow: kept
    assert "id-1" in ms.tombstones  # but remembered
    # kept through time too, while the link stays up
    assert ms.expire(1000.0).removed == ()
    assert "id-1" in ids(ms)
    # the link dies: dropped at once, not retried
    assert ms.link_down("id-1") == Changes(removed=("id-1",))
    assert ids(ms) == {"id-2"}


def test_link_down_without_departure_keeps_the_member() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1)))
    ms.link_up("id-1")
    assert ms.link_down("id-1") == Changes()
    assert ids(ms) == {"id-1"}
    assert ms.link_down("id-unknown") == Changes()


def test_newer_incarnation_refutes_a_departure_while_linked() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 1)))
    ms.link_up("id-1")
    ms.apply_delta(D1, MemberLeft(2, m(1, 1), "timeout"), now=0.0)
    # it re-registered with a bumped incarnation
    assert ms.apply_delta(D1, MemberJoined(3, m(1, 2)), now=0.0) == Changes(added=(m(1, 2),))
    assert ms.link_down("id-1") == Changes()
    assert ms.get("id-1") == m(1, 2)


def test_peer_left_drops_even_when_linked() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 2)))
    ms.link_up("id-1")
    assert ms.peer_left(m(1, 2), now=7.0) == Changes(removed=("id-1",))
    assert ids(ms) == set()
    assert ms.tombstones["id-1"] == Tombstone(2, 7.0)
    # a later link_down about it is harmless
    assert ms.link_down("id-1") == Changes()


def test_member_left_naming_self_asks_for_refutation() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, ME, m(1)))
    changes = ms.apply_delta(D1, MemberLeft(2, ME, "timeout"), now=0.0)
    assert changes == Changes(refute=True)
    assert SELF not in ms.tombstones
    assert ids(ms) == {"id-1"}


def test_peer_left_naming_self_asks_for_refutation() -> None:
    ms = new()
    assert ms.peer_left(ME, now=0.0) == Changes(refute=True)
    assert SELF not in ms.tombstones


def test_learn_is_first_hand_knowledge() -> None:
    ms = new()
    assert ms.learn(m(1)) == Changes(added=(m(1),))
    assert ms.learn(m(1)) == Changes()
    assert ms.learn(m(1, 0)) == Changes()
    assert ms.learn(m(1, 2)) == Changes(added=(m(1, 2),))
    assert ms.learn(ME) == Changes()
    assert ids(ms) == {"id-1"}
    assert not ms.is_listed("id-1")


# -- distributor restarts -----------------------------------------------------


def test_snapshot_after_restart_keeps_live_peers() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(9, m(1), m(2), m(3), epoch="before"))
    for i in (1, 2, 3):
        ms.link_up(f"id-{i}")
    ms.distributor_lost(D1)
    # the restarted distributor has only heard from one node so far
    changes = ms.apply_snapshot(D1, snap(1, m(2), epoch="after"))
    assert changes.removed == ()
    assert ids(ms) == {"id-1", "id-2", "id-3"}
    # and time passing does not drop the linked ones either
    assert ms.expire(0.0).removed == ()
    assert ms.expire(10 * WINDOW).removed == ()
    assert ids(ms) == {"id-1", "id-2", "id-3"}


def test_unlinked_member_missing_from_restart_snapshot_stays_then_expires() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(9, m(1), m(2), epoch="before"))
    ms.distributor_lost(D1)
    ms.apply_snapshot(D1, snap(1, m(2), epoch="after"))
    assert ids(ms) == {"id-1", "id-2"}  # a snapshot drops nothing
    assert ms.expire(100.0) == Changes()
    assert ms.expire(100.0 + WINDOW - 0.1) == Changes()
    assert ms.expire(100.0 + WINDOW) == Changes(removed=("id-1",))
    assert ids(ms) == {"id-2"}


def test_member_relisted_before_the_window_ends_stays() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(9, m(1), m(2), epoch="before"))
    ms.distributor_lost(D1)
    ms.apply_snapshot(D1, snap(1, m(2), epoch="after"))
    ms.expire(100.0)
    # it re-registers with the new distributor run
    ms.apply_delta(D1, MemberJoined(2, m(1, 2)), now=110.0)
    assert ms.expire(110.0) == Changes()
    assert ms.expire(100.0 + 5 * WINDOW) == Changes()
    assert ids(ms) == {"id-1", "id-2"}


# -- the retry window ---------------------------------------------------------


def test_orphan_is_expired_only_after_the_window() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1)))
    assert ms.expire(0.0) == Changes()  # listed
    ms.distributor_lost(D1)
    assert ms.expire(10.0) == Changes()  # orphaned from here
    assert ms.expire(25.0) == Changes()
    assert ms.expire(10.0 + WINDOW - 0.001) == Changes()
    assert ids(ms) == {"id-1"}
    assert ms.expire(10.0 + WINDOW) == Changes(removed=("id-1",))
    assert ids(ms) == set()
    assert ms.expire(1000.0) == Changes()


def test_listed_member_is_never_expired() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1)))
    for t in range(0, 10 * int(WINDOW), 7):
        assert ms.expire(float(t)) == Changes()
    assert ids(ms) == {"id-1"}


def test_member_listed_by_either_distributor_is_kept() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1), m(2)))
    ms.apply_snapshot(D2, snap(1, m(2)))
    ms.distributor_lost(D1)
    ms.expire(0.0)
    assert ms.expire(WINDOW) == Changes(removed=("id-1",))
    assert ids(ms) == {"id-2"}


def test_linked_member_is_never_expired() -> None:
    ms = new()
    ms.learn(m(1))
    ms.link_up("id-1")
    for t in range(0, 10 * int(WINDOW), 7):
        assert ms.expire(float(t)) == Changes()
    assert ids(ms) == {"id-1"}


def test_orphan_clock_starts_when_the_link_goes_down() -> None:
    ms = new()
    ms.learn(m(1))  # a seed's hello: known, not listed
    ms.link_up("id-1")
    ms.expire(0.0)
    ms.expire(100.0)
    ms.link_down("id-1")
    assert ms.expire(101.0) == Changes()  # orphaned from here, not from before
    assert ms.expire(101.0 + WINDOW - 1) == Changes()
    assert ms.expire(101.0 + WINDOW) == Changes(removed=("id-1",))


def test_orphan_clock_restarts_after_a_link_comes_back() -> None:
    ms = new()
    ms.learn(m(1))
    ms.expire(0.0)  # orphaned
    ms.link_up("id-1")
    ms.expire(WINDOW - 1)
    ms.link_down("id-1")
    assert ms.expire(WINDOW) == Changes()  # a fresh window, not the old one
    assert ms.expire(2 * WINDOW - 0.5) == Changes()
    assert ms.expire(2 * WINDOW) == Changes(removed=("id-1",))


def test_orphan_clock_stops_while_listed_again() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1)))
    ms.distributor_lost(D1)
    ms.expire(0.0)
    ms.apply_snapshot(D1, snap(5, m(1), epoch="again"))
    ms.expire(20.0)
    ms.distributor_lost(D1)
    assert ms.expire(40.0) == Changes()  # orphaned again from 40, not from 0
    assert ms.expire(40.0 + WINDOW - 1) == Changes()
    assert ms.expire(40.0 + WINDOW) == Changes(removed=("id-1",))


# -- tombstone ages -----------------------------------------------------------


def test_tombstones_age_out_after_the_window() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 2)))
    ms.apply_delta(D1, MemberLeft(2, m(1, 2), "leave"), now=10.0)
    ms.expire(10.0 + WINDOW - 0.01)
    assert "id-1" in ms.tombstones
    ms.expire(10.0 + WINDOW)
    assert "id-1" not in ms.tombstones
    # once it is gone the same incarnation can be learned again
    assert ms.learn(m(1, 2)) == Changes(added=(m(1, 2),))


def test_hearing_a_departure_again_does_not_refresh_the_tombstone() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 2)))
    ms.apply_snapshot(D2, snap(1, m(1, 2)))
    ms.apply_delta(D1, MemberLeft(2, m(1, 2), "closed"), now=10.0)
    # the second distributor reports it later, and then its own leave arrives
    ms.apply_delta(D2, MemberLeft(2, m(1, 2), "closed"), now=25.0)
    ms.peer_left(m(1, 2), now=35.0)
    ms.peer_left(m(1, 1), now=36.0)
    assert ms.tombstones["id-1"] == Tombstone(2, 10.0)
    ms.expire(10.0 + WINDOW)
    assert "id-1" not in ms.tombstones


def test_departure_of_a_newer_incarnation_is_a_new_tombstone() -> None:
    # DESIGN: tombstones live for the window "from when they were first made";
    # the tombstone for incarnation 2 is first made when incarnation 2 leaves
    ms = new()
    ms.apply_snapshot(D1, snap(1, m(1, 1)))
    ms.apply_delta(D1, MemberLeft(2, m(1, 1), "timeout"), now=0.0)
    ms.apply_delta(D1, MemberJoined(3, m(1, 2)), now=5.0)  # it came back, refuted
    ms.apply_delta(D1, MemberLeft(4, m(1, 2), "leave"), now=29.0)
    assert ms.tombstones["id-1"].incarnation == 2
    ms.expire(30.0)
    # one second after incarnation 2 left, its tombstone must still be there
    assert ms.is_covered(m(1, 2))
    assert ms.learn(m(1, 2)) == Changes()


def test_a_member_forgotten_after_its_window_is_not_brought_back_by_a_peer() -> None:
    from shared.wire import Members

    ms = new()
    ms.learn(m(1, 1))  # first-hand once, say from a seed's list; never linked, never listed
    ms.expire(0.0)
    assert ms.expire(30.0) == Changes(removed=("id-1",))
    assert ms.departures(30.0) == ()  # a local tombstone does not travel
    assert ms.merge(Members((m(1, 1),)), 31.0) == Changes()  # a peer's list cannot revive it
    assert ms.get("id-1") is None
    assert ms.merge(Members((m(1, 2),)), 32.0) == Changes(added=(m(1, 2),))  # a newer one can
    ms2 = new()
    ms2.learn(m(1, 1))
    ms2.expire(0.0)
    ms2.expire(30.0)
    ms2.expire(60.0)  # the local tombstone ages out with the window
    assert ms2.merge(Members((m(1, 1),)), 61.0) == Changes(added=(m(1, 1),))


# -- records that change (services, tags, draining) ----------------------------


def offering(i: int, incarnation: int, *services: str, draining: bool = False) -> Member:
    return replace(m(i, incarnation), services=services, draining=draining)


def test_an_update_delta_replaces_the_record_by_incarnation() -> None:
    ms = new()
    ms.apply_snapshot(D1, snap(1, offering(1, 1, "goods")))
    changes = ms.apply_delta(D1, MemberJoined(2, offering(1, 2, "goods", draining=True)), 0.0)
    assert changes.added == (offering(1, 2, "goods", draining=True),)
    assert ms.get("id-1") == offering(1, 2, "goods", draining=True)


def test_an_older_record_never_wins_whatever_the_order() -> None:
    """Reordered or repeated records, from a distributor, a peer or a restarted distributor:
    the newest incarnation stays."""
    ms = new()
    newest = offering(1, 3, "goods", "stock")
    ms.apply_snapshot(D1, snap(1, newest))
    assert not ms.apply_delta(D1, MemberJoined(2, offering(1, 2, "goods")), 0.0)
    assert not ms.merge(Members((offering(1, 1),)), 0.0)
    # a distributor that restarted lists what it has heard so far: an older record
    assert not ms.apply_snapshot(D1, snap(1, offering(1, 2, "goods"), epoch="epoch-2"))
    assert not ms.apply_snapshot(D2, snap(5, offering(1, 3)))  # equal incarnation, not first-hand
    assert ms.get("id-1") == newest


def test_first_hand_record_wins_at_an_equal_incarnation() -> None:
    """A version-1 peer passes on records without the fields it does not know: the member's
    own hello or announcement puts them back; second-hand lists at that incarnation don't."""
    ms = new()
    ms.merge(Members((m(1, 2),)), 0.0)  # stripped by an old peer
    full = offering(1, 2, "goods")
    assert ms.learn(full).added == (full,)
    assert ms.get("id-1") == full
    assert not ms.learn(full)  # nothing new
    assert not ms.merge(Members((m(1, 2),)), 0.0)
    assert ms.get("id-1") == full


# -- caps: what others can make us hold ------------------------------------------


def test_a_cap_counts_every_refusal_and_reports_each_episode_once() -> None:
    cap = Cap("members", 2)
    assert cap.admits(0) and cap.admits(1)
    assert (cap.refusals, cap.began) == (0, False)
    assert not cap.admits(2)  # the first refusal begins an episode
    assert (cap.refusals, cap.began) == (1, True)
    cap.began = False  # reported
    assert not cap.admits(2) and not cap.admits(5)  # the same episode: counted, not reported
    assert (cap.refusals, cap.began) == (3, False)
    assert cap.admits(1)  # room again: the episode is over
    assert not cap.admits(2)  # a new one begins
    assert (cap.refusals, cap.began) == (4, True)


def test_past_the_member_cap_members_are_refused_and_the_episode_named_once() -> None:
    ms = Membership(SELF, WINDOW, max_members=2)
    changes = ms.apply_snapshot(D1, snap(1, m(1), m(2), m(3), m(4)))
    assert changes == Changes(added=(m(1), m(2)), limits_reached=("members",))
    assert ids(ms) == {"id-1", "id-2"}
    # the same episode, from every kind of event: each refusal counted, no new warning
    assert ms.apply_delta(D1, MemberJoined(2, m(5)), now=0.0) == Changes()
    assert ms.merge(Members((m(6),)), now=0.0) == Changes()
    assert ms.learn(m(7)) == Changes()
    assert ms.member_cap.refusals == 5
    # a known member's newer record is no new member: taken, and no refusal
    assert ms.learn(m(1, 2)) == Changes(added=(m(1, 2),))
    assert ms.member_cap.refusals == 5
    # room again: the next member is taken, and the next refusal is a new episode
    assert ms.apply_delta(D1, MemberLeft(3, m(1, 2), "leave"), now=0.0).removed == ("id-1",)
    assert ms.learn(m(3)) == Changes(added=(m(3),))
    assert ms.learn(m(4)) == Changes(limits_reached=("members",))
    assert ms.member_cap.refusals == 6
    assert ms.tombstone_cap.refusals == 0


def test_past_the_tombstone_cap_departures_are_refused_and_the_episode_named_once() -> None:
    ms = Membership(SELF, WINDOW, max_members=2)
    ms.apply_snapshot(D1, snap(1, m(1), m(2)))
    assert ms.apply_delta(D1, MemberLeft(2, m(1), "leave"), now=0.0) == Changes(removed=("id-1",))
    assert ms.peer_left(m(2), now=0.0) == Changes(removed=("id-2",))
    # full: a third departure leaves no tombstone
    assert ms.apply_delta(D1, MemberLeft(3, m(3), "leave"), now=1.0) == Changes(
        limits_reached=("tombstones",)
    )
    assert ms.merge(Members((), (Departure("id-4", 1, 0.0),)), now=1.0) == Changes()
    assert ms.peer_left(m(5), now=1.0) == Changes()
    assert set(ms.tombstones) == {"id-1", "id-2"}
    assert ms.tombstone_cap.refusals == 3
    # a tombstone already held may still move to a newer incarnation: no refusal
    ms.apply_delta(D1, MemberLeft(4, m(1, 2), "leave"), now=1.0)
    assert ms.tombstones["id-1"].incarnation == 2 and ms.tombstone_cap.refusals == 3
    # the window ends: room again, and the next refusal is a new episode
    ms.expire(WINDOW + 1.0)
    assert not ms.tombstones
    assert ms.peer_left(m(6), now=WINDOW + 1.0) == Changes()
    assert ms.peer_left(m(7), now=WINDOW + 1.0) == Changes()
    assert ms.peer_left(m(8), now=WINDOW + 1.0) == Changes(limits_reached=("tombstones",))
    assert ms.tombstone_cap.refusals == 4
