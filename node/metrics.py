"""A node's metrics: what it counts, and the collector /metrics reads.

    mesh_members{state}                      gauge: other members known, active or draining
    mesh_peers{state}                        gauge: peer links: connected, connecting, retrying
    mesh_distributors{state}                 gauge: connected, connecting, disconnected
    mesh_events_total{type}                  from distributors: snapshot, member_joined/_left
    mesh_requests_total{method, outcome}     requests this node made (/v1/request, the API)
    mesh_request_duration_seconds{mode}      histogram: direct (a member) or service (routed)
    mesh_requests_handled_total{method, outcome}  requests its handlers answered for peers
    mesh_retries_total{link}                 dials after a failure or a lost link
    mesh_limit_refusals_total{limit}         records refused at a cap: members, tombstones
    mesh_frames_/bytes_sent/received_total   link="peer" or "distributor"
    mesh_connections_rejected_total{reason}, mesh_handshakes_failed_total{reason} (peer port)
    mesh_event_loop_lag_seconds              histogram
    mesh_gateway_requests_total{service, code}        users' HTTP through the gateway
    mesh_gateway_request_duration_seconds{service}    histogram: until the answer ended

A method label is bounded: a method registered here, or one a peer has answered with a
result (so it is registered there), up to MAX_METHODS of them; any other is `other`. A
caller cannot grow the series by sending made-up method names.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from shared.metrics import (
    LATENCY_BUCKETS,
    Buckets,
    Refusals,
    Traffic,
    add_route,
    counter_by,
    gauge_by_state,
    histogram,
    lag_family,
    refusal_families,
    traffic_families,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from node.linkstatus import LinkStatus
    from node.membership import Cap
    from shared.looplag import LoopLag
    from shared.wire import Member

MAX_METHODS = 64  # distinct method labels; beyond, `other`
OTHER = "other"
# A request's outcome: ok, or its failure's HTTP status as a word (a small fixed set), or
# cancelled (the caller went away: an HTTP client that hung up).
OUTCOMES = {
    400: "bad_request",
    404: "not_found",
    409: "bad_request",  # a name shared by several members
    413: "too_large",
    429: "busy",
    502: "error",
    503: "unavailable",
    504: "timeout",
}
MODES = ("direct", "service")
PEER_STATES = ("connected", "connecting", "retrying")
DISTRIBUTOR_STATES = ("connected", "connecting", "disconnected")
MEMBER_STATES = ("active", "draining")
EVENT_TYPES = ("snapshot", "member_joined", "member_left")
RETRY_LINKS = ("distributor", "peer", "seed")


class GatewayStats:
    """The gateway's requests by service and status code, and their durations. A service
    that was not found is `other`, and so is any beyond MAX_METHODS services."""

    def __init__(self) -> None:
        self.requests: collections.defaultdict[tuple[str, str], int] = collections.defaultdict(int)
        self.durations: dict[str, Buckets] = {}

    def done(self, service: str | None, status: int, seconds: float) -> None:
        label = OTHER if service is None else service
        if label not in self.durations and len(self.durations) >= MAX_METHODS:
            label = OTHER
        self.requests[label, str(status)] += 1
        buckets = self.durations.get(label)
        if buckets is None:
            buckets = self.durations[label] = Buckets(LATENCY_BUCKETS)
        buckets.observe(seconds)


class NodeStats:
    """What a node counts as it goes: plain numbers, read at scrape time."""

    def __init__(self) -> None:
        self.peer_traffic = Traffic()
        self.distributor_traffic = Traffic()
        self.refusals = Refusals()  # the peer listener's
        self.events: collections.Counter[str] = collections.Counter()  # from distributors
        self.retries: collections.Counter[str] = collections.Counter()  # by link
        # (method label, outcome) -> count: requests made, and requests answered for peers
        self.requests: collections.defaultdict[tuple[str, str], int] = collections.defaultdict(int)
        self.handled: collections.defaultdict[tuple[str, str], int] = collections.defaultdict(int)
        self.latency = {mode: Buckets(LATENCY_BUCKETS) for mode in MODES}
        # method labels: registered here, or answered with a result by some peer
        self._known: set[str] = set()
        self.gateway = GatewayStats()

    def request_done(
        self, method: str, mode: str, outcome: str, seconds: float, registered: Container[str]
    ) -> None:
        """One request made (direct or routed, however many providers it tried)."""
        if method not in self._known:
            method = self._label(method, outcome, registered)
        self.requests[method, outcome] += 1
        latency = self.latency[mode]  # Buckets.observe, inlined: this runs per request
        latency.counts[bisect.bisect_left(latency.bounds, seconds)] += 1
        latency.sum += seconds

    def _label(self, method: str, outcome: str, registered: Container[str]) -> str:
        """A method not seen yet: its own label if registered here or answered with a result
        (so registered where it went), while there is room; else `other`."""
        if method in registered or outcome == "ok":
            if len(self._known) < MAX_METHODS:
                self._known.add(method)
                return method
            if method in registered:
                return method
        return OTHER


# What the collector reads of a node (node.app.Node is one), and no more: this module
# need not know the Node, which itself holds a NodeStats from here.


class HasStatus(Protocol):
    status: LinkStatus


class MembershipView(Protocol):
    caps: tuple[Cap, ...]

    def members(self) -> list[Member]: ...


class MeshView(Protocol):
    @property
    def peers(self) -> Mapping[str, HasStatus]: ...


class RegistrarView(Protocol):
    @property
    def distributors(self) -> Sequence[HasStatus]: ...


class ObservedNode(Protocol):
    stats: NodeStats
    lag: LoopLag

    @property
    def membership(self) -> MembershipView: ...

    @property
    def mesh(self) -> MeshView: ...

    @property
    def registrar(self) -> RegistrarView: ...


class NodeCollector:
    """A node's families, made from its state and counters at scrape time."""

    def __init__(self, node: ObservedNode) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        stats = node.stats
        yield gauge_by_state(
            "mesh_members",
            "Other members this node knows, by state",
            MEMBER_STATES,
            ("draining" if m.draining else "active" for m in node.membership.members()),
        )
        yield gauge_by_state(
            "mesh_peers",
            "Links to other members, by state",
            PEER_STATES,
            (p.status.state for p in node.mesh.peers.values()),
        )
        yield gauge_by_state(
            "mesh_distributors",
            "Configured distributors, by the state of the link to each",
            DISTRIBUTOR_STATES,
            (d.status.state for d in node.registrar.distributors),
        )
        yield counter_by(
            "mesh_events",
            "Membership snapshots and deltas received from distributors and applied, by type",
            "type",
            stats.events,
            EVENT_TYPES,
        )
        yield _by_method(
            "mesh_requests",
            "Requests this node made to members or services, by method and outcome",
            stats.requests,
        )
        family = None
        for mode in MODES:
            family = histogram(
                "mesh_request_duration_seconds",
                "Time until a request this node made was answered or failed",
                stats.latency[mode],
                ("mode",),
                (mode,),
                family,
            )
        assert family is not None
        yield family
        yield _by_method(
            "mesh_requests_handled",
            "Requests from other members this node's handlers answered, by method and outcome",
            stats.handled,
        )
        yield counter_by(
            "mesh_retries",
            "Connection attempts after a failed attempt or a lost link, by kind of link",
            "link",
            stats.retries,
            RETRY_LINKS,
        )
        yield counter_by(
            "mesh_limit_refusals",
            "Records refused because a cap (MESH_MAX_MEMBERS) was reached, by limit",
            "limit",
            {cap.name: cap.refusals for cap in node.membership.caps},  # every cap, 0 included
        )
        yield from traffic_families(
            {"peer": stats.peer_traffic, "distributor": stats.distributor_traffic}
        )
        yield from refusal_families(stats.refusals)
        yield lag_family(node.lag.histogram)
        yield from _gateway_families(stats.gateway)


def _gateway_families(stats: GatewayStats) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily  # at scrape time (shared/metrics.py)

    requests = CounterMetricFamily(
        "mesh_gateway_requests",
        "Users' HTTP requests through the gateway, by service and status code",
        labels=["service", "code"],
    )
    for (service, code), count in sorted(stats.requests.items()):
        requests.add_metric([service, code], count)
    yield requests
    family = None
    for service, buckets in sorted(stats.durations.items()):
        family = histogram(
            "mesh_gateway_request_duration_seconds",
            "Time from a gateway request's arrival until its answer ended",
            buckets,
            ("service",),
            (service,),
            family,
        )
    if family is not None:
        yield family


def _by_method(name: str, help_text: str, counts: dict[tuple[str, str], int]) -> Metric:
    from prometheus_client.core import CounterMetricFamily  # at scrape time (shared/metrics.py)

    family = CounterMetricFamily(name, help_text, labels=["method", "outcome"])
    for (method, outcome), count in sorted(counts.items()):
        family.add_metric([method, outcome], count)
    return family


def add_routes(app: web.Application, node: ObservedNode) -> None:
    """GET /metrics."""
    add_route(app, NodeCollector(node))
