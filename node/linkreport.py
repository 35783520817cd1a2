"""Which peer links a node reports to its distributors as broken. Pure: no sockets, no clock.

A link counts as broken once it has been out of `connected` for longer than the
heartbeat timeout (a reconnect in progress is not news). The node reports its whole
set of broken links, only when that set changes and at most once per `spacing`
seconds, so a flapping link cannot flood the distributor. With it the distributor
sees a partial partition (both ends registered, yet one cannot reach the other),
which no registry that only watches its own links can.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.wire import BrokenLink


class LinkReporter:
    def __init__(self, timeout: float, spacing: float = 1.0) -> None:
        self.timeout = timeout  # seconds out of `connected` before a link counts as broken
        self.spacing = spacing  # seconds between two reports at least
        self.last: tuple[BrokenLink, ...] = ()  # the set last reported
        self._sent_at = float("-inf")

    def broken(self, links: Iterable[tuple[str, str, float]], now: float) -> tuple[BrokenLink, ...]:
        """(peer id, state, since) of every peer link, wall-clock `now` -> the broken ones."""
        return tuple(
            sorted(
                (
                    BrokenLink(peer_id, state, since)
                    for peer_id, state, since in links
                    if state != "connected" and now - since > self.timeout
                ),
                key=lambda link: link.to,
            )
        )

    def due(self, broken: tuple[BrokenLink, ...], now: float) -> bool:
        """True when `broken` should be sent now (and is then taken as reported)."""
        if broken == self.last or now - self._sent_at < self.spacing:
            return False
        self.last, self._sent_at = broken, now
        return True
