"""node/reconnect.py: connect, run, back off; retries, status and logs as the three links use them.

The backoff's random source always draws 0, so the loop never really sleeps; what it
would have waited shows as the backoff's attempt count, read at each connect.
"""

from __future__ import annotations

import collections
import logging
import random
from typing import Any

from node.linkstatus import LinkStatus
from node.reconnect import DISTRIBUTOR, PEER, SEED, Policy, keep_linked
from shared.backoff import Backoff
from shared.linkend import EndReason, LinkDown, LinkEnd

REFUSED = LinkEnd(EndReason.CLOSED, "connection refused")
STALE = LinkEnd(EndReason.PROTOCOL, "refused: stale_incarnation: left", "stale_incarnation")
CLOSED = LinkEnd(EndReason.CLOSED, "connection closed by peer")
LEAVE = LinkEnd(EndReason.LEAVE, "peer said goodbye")
LINK = "link"  # what a connect that works returns; run() gets it back


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


class Log:
    """The logger's one method the loop uses, recording instead."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, dict[str, Any]]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.lines.append((level, event, fields))


class Script:
    """connect() fails with, or returns a link that run() ends with, each step in turn.

    A step is a LinkEnd: the attempt fails with it; or ("up", end): the link comes up and
    ends with `end` (None: run() did not take it). It records, at every connect, the
    backoff's attempts so far, the status's state and the retries counted.
    """

    def __init__(self, policy: Policy, *steps: LinkEnd | tuple[str, LinkEnd | None]) -> None:
        self.steps = list(steps)
        self.backoff = Backoff(1.0, 8.0, NoJitter())
        self.status = LinkStatus("connecting")
        self.retries: collections.Counter[str] = collections.Counter()
        self.log = Log()
        self.policy = policy
        self.connects: list[tuple[int, str, int]] = []  # (backoff attempt, state, retries)
        self.ends: list[LinkEnd] = []
        self.states_while_up: list[str] = []
        self._running: LinkEnd | None = None

    async def connect(self) -> str:
        self.connects.append(
            (self.backoff.attempt, self.status.state, self.retries[self.policy.kind])
        )
        step = self.steps.pop(0)
        if isinstance(step, LinkEnd):
            raise LinkDown(step)
        self._running = step[1]
        return LINK

    async def run(self, link: str) -> LinkEnd | None:
        assert link == LINK
        if self._running is not None:  # as a run() does: the link shows while it is up
            self.status.succeeded()
            self.states_while_up.append(self.status.state)
        return self._running

    async def keep_linked(self, **hooks: Any) -> None:
        await keep_linked(
            self.connect,
            self.run,
            self.policy,
            backoff=self.backoff,
            status=self.status,
            log=self.log,  # type: ignore[arg-type]
            retries=self.retries,
            keep_going=lambda: bool(self.steps),
            on_end=self.ends.append,
            **hooks,
        )


async def test_a_first_attempt_is_no_retry_and_every_later_one_is() -> None:
    script = Script(DISTRIBUTOR, REFUSED, REFUSED, ("up", CLOSED), REFUSED)
    await script.keep_linked()
    assert [retries for _, _, retries in script.connects] == [0, 1, 2, 3]
    assert script.retries == {"distributor": 3}  # four attempts, three retries


async def test_failed_attempts_show_in_the_status_and_a_link_up_clears_them() -> None:
    script = Script(DISTRIBUTOR, REFUSED, STALE, ("up", CLOSED), REFUSED)
    await script.keep_linked()
    # a distributor shows 'connecting' during every attempt, 'disconnected' after a failure
    assert [state for _, state, _ in script.connects] == ["connecting"] * 4
    assert script.states_while_up == ["connected"]
    assert script.status.state == "disconnected"
    assert (script.status.attempts, script.status.last_error) == (1, REFUSED.detail)


async def test_a_peer_keeps_its_state_during_an_attempt_and_retries_after_a_failure() -> None:
    script = Script(PEER, REFUSED, REFUSED)
    await script.keep_linked()
    assert [state for _, state, _ in script.connects] == ["connecting", "retrying"]
    assert (script.status.state, script.status.attempts) == ("retrying", 2)


async def test_failures_back_off_and_a_link_that_was_up_resets_the_backoff() -> None:
    script = Script(PEER, REFUSED, REFUSED, REFUSED, ("up", CLOSED), REFUSED, REFUSED)
    await script.keep_linked()
    assert [attempt for attempt, _, _ in script.connects] == [0, 1, 2, 3, 1, 2]


async def test_a_link_not_taken_does_not_reset_the_backoff() -> None:
    script = Script(SEED, REFUSED, REFUSED, ("up", None), REFUSED)
    await script.keep_linked()
    assert [attempt for attempt, _, _ in script.connects] == [0, 1, 2, 3]
    assert script.status.attempts == 3  # run() did not show it up: no success either


async def test_a_distributor_that_said_goodbye_is_dialled_again_at_once() -> None:
    script = Script(DISTRIBUTOR, REFUSED, ("up", LEAVE), ("up", CLOSED), REFUSED)
    await script.keep_linked()
    # after the goodbye no delay was drawn; after the close, one was (from a reset)
    assert [attempt for attempt, _, _ in script.connects] == [0, 1, 0, 1]


async def test_a_peer_that_said_goodbye_is_not_dialled_at_once() -> None:
    script = Script(PEER, ("up", LEAVE), REFUSED)
    await script.keep_linked()
    assert [attempt for attempt, _, _ in script.connects] == [0, 1]


async def test_every_failed_attempt_and_every_link_end_is_seen() -> None:
    script = Script(SEED, STALE, ("up", CLOSED), ("up", None), REFUSED)
    await script.keep_linked()
    assert script.ends == [STALE, CLOSED, REFUSED]  # not the link run() did not take


async def test_a_failed_attempt_is_logged_with_its_policys_event_and_level() -> None:
    for policy, level in ((DISTRIBUTOR, logging.INFO), (SEED, logging.INFO), (PEER, logging.DEBUG)):
        script = Script(policy, REFUSED, REFUSED)
        await script.keep_linked()
        assert script.log.lines == [
            (level, policy.failed_event, {"attempts": n, "error": REFUSED.detail, "retry_in": 0})
            for n in (1, 2)
        ]


async def test_a_link_up_elsewhere_makes_the_next_attempt_a_first_one() -> None:
    script = Script(SEED, REFUSED, REFUSED, REFUSED, REFUSED)
    turns = iter([False, False, True, False, False, False])

    async def wait_turn() -> bool:
        return next(turns)

    await script.keep_linked(wait_turn=wait_turn)
    # two failures, then a peer link was up while we waited: the backoff and the
    # retries start afresh (the third attempt is a first one, not counted)
    assert script.connects == [
        (0, "connecting", 0),
        (1, "retrying", 1),
        (0, "retrying", 1),
        (1, "retrying", 2),
    ]


async def test_the_loop_ends_when_it_should_no_longer_keep_going() -> None:
    script = Script(PEER, REFUSED, REFUSED, REFUSED)
    await keep_linked(
        script.connect,
        script.run,
        PEER,
        backoff=script.backoff,
        status=script.status,
        log=script.log,  # type: ignore[arg-type]
        retries=script.retries,
        keep_going=lambda: len(script.connects) < 2,
    )
    assert len(script.connects) == 2 and len(script.steps) == 1
