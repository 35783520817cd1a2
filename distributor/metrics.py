"""The distributor's metrics: what its server counts, and the collector /metrics reads.

    mesh_members{state}                     gauge: registered members, active or draining
    mesh_watchers{kind}                     gauge: parked blocking queries, open event streams
    mesh_events_total{type}                 events sent to the nodes: member_joined, member_left
    mesh_departures_total{reason}           members gone: leave, closed, timeout, protocol
    mesh_frames_/bytes_sent/received_total  on the nodes' links (link="node")
    mesh_connections_rejected_total{reason}, mesh_handshakes_failed_total{reason}
    mesh_event_loop_lag_seconds             histogram

The server adds to plain counters as things happen; everything is turned into metric
families only when /metrics is scraped (see shared/metrics.py).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from distributor.watch import Watchers
from shared.looplag import LoopLag
from shared.metrics import (
    Refusals,
    Traffic,
    add_route,
    counter_by,
    gauge_by,
    gauge_by_state,
    lag_family,
    refusal_families,
    traffic_families,
)

# prometheus-client is imported at the first scrape (shared/metrics.py), not at start
if TYPE_CHECKING:
    from prometheus_client.core import Metric

EVENT_TYPES = ("member_joined", "member_left")
DEPARTURE_REASONS = ("leave", "closed", "timeout", "protocol")
MEMBER_STATES = ("active", "draining")


class DistributorStats:
    """What the server counts; one per server, read by the collector."""

    def __init__(self, lag: LoopLag) -> None:
        self.lag = lag
        self.traffic = Traffic()  # the nodes' links
        self.refusals = Refusals()  # the listener's, and registrations refused
        self.events: collections.Counter[str] = collections.Counter()  # by wire type
        self.departures: collections.Counter[str] = collections.Counter()  # by reason


class DistributorCollector:
    """The distributor's families, made from its state and counters at scrape time."""

    def __init__(self, watchers: Watchers, stats: DistributorStats | None) -> None:
        self._watchers = watchers
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        registry = self._watchers.registry
        yield gauge_by_state(
            "mesh_members",
            "Members registered with this distributor, by state",
            MEMBER_STATES,
            ("draining" if e.member.draining else "active" for e in registry.entries()),
        )
        yield gauge_by(
            "mesh_watchers",
            "HTTP watchers waiting now: parked blocking queries and open event streams",
            "kind",
            {"blocking_query": self._watchers.parked, "event_stream": self._watchers.streams},
        )
        stats = self._stats
        if stats is None:  # an app made without a server (the HTTP unit tests)
            return
        yield counter_by(
            "mesh_events",
            "Membership events sent to the nodes, by type (an update goes as member_joined)",
            "type",
            stats.events,
            EVENT_TYPES,
        )
        yield counter_by(
            "mesh_departures",
            "Members that left the registry, by reason",
            "reason",
            stats.departures,
            DEPARTURE_REASONS,
        )
        yield from traffic_families({"node": stats.traffic})
        yield from refusal_families(stats.refusals)
        yield lag_family(stats.lag.histogram)


def add_routes(app: web.Application, watchers: Watchers, stats: DistributorStats | None) -> None:
    """GET /metrics (stats None: an app made without a server has only the gauges)."""
    add_route(app, DistributorCollector(watchers, stats))
