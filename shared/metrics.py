"""Metrics (DESIGN.md, "Operating it"): counted in plain numbers, exposed with prometheus-client.

Where something happens (a frame, a read, a write, an event, a request) it costs an
attribute or dict increment, nothing more: no lock, no prometheus-client call on the hot
paths (a Counter.inc takes a lock and costs ten times as much). Bytes are counted per
write and per read, not per frame. A Collector of each program (distributor/metrics.py,
node/metrics.py) turns those numbers, and the live state (members, peers, distributors by
state), into metric families when /metrics is scraped, so a gauge costs nothing between
scrapes.

Each program instance has its own CollectorRegistry (add_route), never the global
default one: several nodes or distributors built in one process (tests, the benchmarks)
do not collide. Names follow Prometheus' conventions: the `mesh_` prefix, base units
(seconds, bytes), counters ending in `_total`, label values from small fixed sets.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

# prometheus-client is imported at the first scrape, not at start: a process that is never
# scraped does not carry it (about 1 MB of RSS, and its imports: wsgiref, gzip, ...)
if TYPE_CHECKING:
    from prometheus_client.core import (
        CounterMetricFamily,
        HistogramMetricFamily,
        Metric,
    )

# The text format generate_latest writes. prometheus-client's CONTENT_TYPE_LATEST says
# version=1.0.0 in recent releases; 0.0.4 is what every Prometheus reads (ours are plain
# legacy names, so the body is the same either way).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds; +Inf is added at scrape time
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# Label values shown even at 0, so a series exists before its first event (a rate() over
# a series that appears only later misses its first increase).
REJECT_REASONS = ("handshake_limit", "members_full", "stale_incarnation")
HANDSHAKE_FAILURES = ("timeout", "closed", "protocol", "auth_failed", "unsupported_version")


class Traffic:
    """Frames and bytes of a kind of link, both ways. A Link adds to it as it goes."""

    __slots__ = ("bytes_received", "bytes_sent", "frames_received", "frames_sent")

    def __init__(self) -> None:
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0  # per write to the transport
        self.bytes_received = 0  # per read from the stream


class Refusals:
    """A listener's rejected connections and failed handshakes, by reason."""

    def __init__(self) -> None:
        self.rejected: collections.Counter[str] = collections.Counter()
        self.handshake_failed: collections.Counter[str] = collections.Counter()


class Buckets:
    """A histogram as plain counts: observe() is a bisect and three additions.

    counts[i] is how many values were at most bounds[i] and above bounds[i - 1]; the
    last one is above every bound (+Inf). Made cumulative only at scrape time.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, count of values <= le) pairs, +Inf last: what HistogramMetricFamily takes."""
        pairs, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            pairs.append((_le(bound), total))
        return pairs


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


# -- families, built at scrape time -----------------------------------------------


def traffic_families(by_link: Mapping[str, Traffic]) -> Iterator[Metric]:
    """Frames and bytes sent and received, labelled by the kind of link."""
    from prometheus_client.core import CounterMetricFamily

    for name, attribute, help_text in (
        ("mesh_frames_sent", "frames_sent", "Frames queued for sending on mesh links"),
        ("mesh_frames_received", "frames_received", "Frames received and decoded on mesh links"),
        ("mesh_bytes_sent", "bytes_sent", "Bytes written to mesh links (frames and prefixes)"),
        ("mesh_bytes_received", "bytes_received", "Bytes read from mesh links"),
    ):
        family = CounterMetricFamily(name, help_text, labels=["link"])
        for link, traffic in by_link.items():
            family.add_metric([link], getattr(traffic, attribute))
        yield family


def refusal_families(refusals: Refusals) -> Iterator[Metric]:
    yield counter_by(
        "mesh_connections_rejected",
        "Connections refused before or at registration, by reason",
        "reason",
        refusals.rejected,
        REJECT_REASONS,
    )
    yield counter_by(
        "mesh_handshakes_failed",
        "Accepted connections whose handshake (hello, version, secret) failed, by reason",
        "reason",
        refusals.handshake_failed,
        HANDSHAKE_FAILURES,
    )


def lag_family(lag: Buckets) -> Metric:
    return histogram(
        "mesh_event_loop_lag_seconds",
        "How late the event loop's lag sampler woke, per 100 ms tick",
        lag,
    )


def counter_by(
    name: str, help_text: str, label: str, counts: Mapping[str, int], always: Iterable[str] = ()
) -> CounterMetricFamily:
    """A counter family with one label; the `always` values show even at 0."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, help_text, labels=[label])
    values = dict.fromkeys(always, 0)
    values.update(counts)
    for value, count in values.items():
        family.add_metric([value], count)
    return family


def gauge_by(name: str, help_text: str, label: str, values: Mapping[str, float]) -> Metric:
    """A gauge family with one label."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, help_text, labels=[label])
    for value, number in values.items():
        family.add_metric([value], number)
    return family


def gauge_by_state(
    name: str, help_text: str, states: tuple[str, ...], current: Iterable[str]
) -> Metric:
    """How many things are in each state; every state shows, 0 included."""
    counts = dict.fromkeys(states, 0)
    for state in current:
        counts[state] = counts.get(state, 0) + 1
    return gauge_by(name, help_text, "state", counts)


def histogram(
    name: str,
    help_text: str,
    buckets: Buckets,
    labels: tuple[str, ...] = (),
    values: tuple[str, ...] = (),
    family: HistogramMetricFamily | None = None,
) -> HistogramMetricFamily:
    """Buckets as a histogram family (or one more labelled series in `family`)."""
    from prometheus_client.core import HistogramMetricFamily

    if family is None:
        family = HistogramMetricFamily(name, help_text, labels=list(labels))
    family.add_metric(list(values), buckets.cumulative(), buckets.sum)
    return family


# -- /metrics -----------------------------------------------------------------------


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def add_route(app: web.Application, collector: Collector) -> None:
    """GET /metrics on `app`: this collector and the process's own (CPU, memory, files),
    in a registry of their own, made at the first scrape."""
    registry = None

    async def metrics(request: web.Request) -> web.Response:
        nonlocal registry
        from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)  # type: ignore[arg-type]
            ProcessCollector(registry=registry)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
