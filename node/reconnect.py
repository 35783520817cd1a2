"""The one reconnect loop of a node's links: its distributors, its seeds, its peers.

Connect, run the link until it ends, back off, again. What a link is and what its
end means is up to the `connect` and `run` it is given; the small differences
between the three kinds of link are a Policy (the three are side by side below)
and a few hooks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from structlog.typing import FilteringBoundLogger

from node.linkstatus import LinkStatus
from shared.backoff import Backoff
from shared.linkend import EndReason, LinkDown, LinkEnd

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Policy:
    kind: str  # the retries counter's label (mesh_retries_total{link})
    failed_event: str  # what a failed attempt logs (tests and the README grep for these)
    failed_state: str  # the status a failed attempt leaves
    attempt_state: str | None = None  # the status while an attempt is under way (None: as is)
    failed_level: int = logging.INFO
    retry_at_once_after_leave: bool = False  # a goodbye means "come back soon", not "gone"


# a distributor that said goodbye is going down cleanly: its successor is dialled at once
DISTRIBUTOR = Policy(
    "distributor",
    "distributor_attempt_failed",
    "disconnected",
    attempt_state="connecting",
    retry_at_once_after_leave=True,
)
SEED = Policy("seed", "seed_attempt_failed", "retrying")
# a member unreachable for its whole retry window is no news at the info level
PEER = Policy("peer", "peer_dial_failed", "retrying", failed_level=logging.DEBUG)


async def keep_linked(
    connect: Callable[[], Awaitable[T]],
    run: Callable[[T], Awaitable[LinkEnd | None]],
    policy: Policy,
    *,
    backoff: Backoff,
    status: LinkStatus,
    log: FilteringBoundLogger,
    retries: collections.Counter[str],
    keep_going: Callable[[], bool] = lambda: True,
    wait_turn: Callable[[], Awaitable[bool]] | None = None,
    on_end: Callable[[LinkEnd], None] | None = None,
) -> None:
    """Keep one link up while `keep_going()` says so (or until cancelled).

    `connect()` dials and completes the handshake, or raises LinkDown: a failed attempt,
    counted in `status` and logged. `run(link)` serves what connect returned until it
    ends and returns why (None: it was not taken, and closed), and shows the link's state
    in `status` while it is up and when it ends. The first attempt is no retry; each
    later one is counted in `retries`. `wait_turn()`, before each attempt, waits while
    a link we need not dial is up, and returns True if one was: the next attempt is
    then a first one again, with the backoff reset. `on_end` sees how every attempt
    and every link ended (a refusal saying we are a stale incarnation, say).
    """
    retry = False
    while keep_going():
        if wait_turn is not None and await wait_turn():
            backoff.reset()
            retry = False
            continue  # keep_going() may have changed while we waited
        retries[policy.kind] += retry
        retry = True
        if policy.attempt_state is not None:
            status.set(policy.attempt_state)
        try:
            link = await connect()
        except LinkDown as exc:
            status.failed(policy.failed_state, exc.end.detail)
            if on_end is not None:
                on_end(exc.end)
            delay = backoff.next_delay()
            log.log(
                policy.failed_level,
                policy.failed_event,
                attempts=status.attempts,
                error=exc.end.detail,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)
            continue
        end = await run(link)
        if end is not None:  # it was up: the next failure starts the backoff afresh
            backoff.reset()
            if on_end is not None:
                on_end(end)
            if policy.retry_at_once_after_leave and end.reason is EndReason.LEAVE:
                continue
        await asyncio.sleep(backoff.next_delay())
