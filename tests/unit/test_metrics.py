"""Metrics in memory: the plain counters, the histograms, the collectors and /metrics.

Counting is plain numbers on the hot paths; the collectors turn them (and the live state)
into families at scrape time. Checked here against prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distributor.http import make_app as distributor_app
from distributor.metrics import DistributorCollector, DistributorStats
from distributor.registry import Registry
from distributor.watch import VersionWatch
from node.handlers import builtin_handlers
from node.linkstatus import LinkStatus
from node.membership import Cap
from node.metrics import MAX_METHODS, OTHER, NodeCollector, NodeStats
from shared.config import Tuning
from shared.framing import encode_frame
from shared.link import Link
from shared.linkend import LinkEnd
from shared.listener import handshake_failure
from shared.looplag import LoopLag
from shared.metrics import CONTENT_TYPE, LAG_BUCKETS, Buckets, Traffic, add_route
from shared.wire import Heartbeat, Member, MemberJoined, MemberLeft

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, labels) -> value) from exposition text."""
    types, samples = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return types, samples


def scrape(*collectors: Any) -> tuple[dict[str, str], Samples]:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return parse(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


# -- Buckets ------------------------------------------------------------------------


def test_buckets_count_a_value_in_the_first_bound_at_or_above_it() -> None:
    buckets = Buckets((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 3.0):
        buckets.observe(v)
    assert buckets.counts == [2, 2, 1]  # <= 0.1 (0.1 itself included), <= 1, above
    assert buckets.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert buckets.count == 5
    assert buckets.sum == pytest.approx(4.65)


def test_loop_lag_ticks_fill_the_lag_histogram() -> None:
    lag = LoopLag(interval=0.1)
    for now in (100.0, 100.1, 100.2005, 100.8):  # on time, 0.5 ms late, 499.5 ms late
        lag.tick(now)
    assert lag.histogram.bounds == LAG_BUCKETS
    assert lag.histogram.count == 3  # the first tick has nothing to be late for
    assert lag.histogram.sum == pytest.approx(0.5)  # 0 + 0.0005 + 0.4995
    cumulative = dict(lag.histogram.cumulative())
    assert cumulative["0.001"] == 2 and cumulative["0.25"] == 2 and cumulative["0.5"] == 3


# -- Link counts, in memory ----------------------------------------------------------


class FakeTransport:
    """What Link uses of a transport: written bytes are kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str) -> Any:
        return None

    def abort(self) -> None:
        pass


async def test_a_link_counts_frames_and_bytes_both_ways() -> None:
    traffic = Traffic()
    transport = FakeTransport()
    link = Link(Tuning(), LoopLag(), traffic=traffic)
    link.connection_made(transport)  # type: ignore[arg-type]
    beat = encode_frame(Heartbeat())
    link.send_nowait(Heartbeat())  # written at once
    link.send_nowait(beat * 3, 3)  # pre-encoded bytes holding three frames: queued
    assert (traffic.frames_sent, traffic.bytes_sent) == (4, len(beat))
    await asyncio.sleep(0)  # the end of the loop iteration: one write for what was queued
    assert len(transport.written) == 2
    assert (traffic.frames_sent, traffic.bytes_sent) == (4, 4 * len(beat))

    link.data_received(beat * 2)  # two frames in one read
    for _ in range(2):
        assert isinstance(await link.receive(asyncio.get_running_loop().time() + 5), Heartbeat)
    assert (traffic.frames_received, traffic.bytes_received) == (2, 2 * len(beat))


def test_handshake_failures_are_named_by_what_went_wrong() -> None:
    assert handshake_failure(LinkEnd("timeout", "no frame")) == "timeout"
    assert handshake_failure(LinkEnd("closed", "gone")) == "closed"
    assert handshake_failure(LinkEnd("protocol", "bad json")) == "protocol"
    assert handshake_failure(LinkEnd("protocol", "x", sent="auth_failed")) == "auth_failed"
    refused_us = LinkEnd("protocol", "refused: full", code="full")
    assert handshake_failure(refused_us) == "protocol"


# -- the node's counts and collector -------------------------------------------------


def test_a_method_label_is_bounded() -> None:
    stats, handlers = NodeStats(), builtin_handlers()
    stats.request_done("echo", "direct", "timeout", 0.01, handlers)  # registered here
    stats.request_done("made-up", "direct", "error", 0.01, handlers)  # unknown everywhere
    stats.request_done("list", "service", "timeout", 0.01, handlers)  # not yet answered
    stats.request_done("list", "service", "ok", 0.01, handlers)  # answered: it exists there
    stats.request_done("list", "service", "timeout", 0.01, handlers)
    assert dict(stats.requests) == {
        ("echo", "timeout"): 1,
        (OTHER, "error"): 1,
        (OTHER, "timeout"): 1,
        ("list", "ok"): 1,
        ("list", "timeout"): 1,
    }
    for i in range(MAX_METHODS + 10):  # a caller inventing names cannot grow the series
        stats.request_done(f"m{i}", "direct", "ok", 0.01, handlers)
    methods = {method for method, _ in stats.requests}
    assert len(methods) == MAX_METHODS + 1  # and `other`
    assert stats.requests[OTHER, "ok"] == 12  # "echo" and "list" took two places
    assert stats.latency["direct"].count == 2 + MAX_METHODS + 10
    assert stats.latency["service"].count == 3


def member(i: int, draining: bool = False) -> Member:
    return Member(f"id-{i}", f"n{i}", f"127.0.0.1:{9000 + i}", 1, draining=draining)


def fake_node(stats: NodeStats, lag: LoopLag) -> SimpleNamespace:
    """What NodeCollector reads of a node (node.metrics.ObservedNode)."""

    def peer(state: str) -> SimpleNamespace:
        return SimpleNamespace(status=LinkStatus(state))

    return SimpleNamespace(
        stats=stats,
        lag=lag,
        membership=SimpleNamespace(
            members=lambda: [member(1), member(2), member(3, draining=True)],
            caps=(Cap("members", 3), Cap("tombstones", 3)),
        ),
        mesh=SimpleNamespace(
            peers={"a": peer("connected"), "b": peer("connected"), "c": peer("retrying")}
        ),
        registrar=SimpleNamespace(distributors=[SimpleNamespace(status=LinkStatus("connecting"))]),
    )


def test_the_node_collector_reads_state_and_counts_at_scrape_time() -> None:
    stats, lag = NodeStats(), LoopLag()
    node = fake_node(stats, lag)
    stats.peer_traffic.bytes_sent = 1234
    stats.distributor_traffic.frames_received = 7
    stats.events["member_joined"] += 2
    stats.retries["distributor"] += 3
    stats.refusals.handshake_failed["auth_failed"] += 1
    stats.handled["echo", "ok"] += 5
    stats.request_done("echo", "direct", "ok", 0.0003, builtin_handlers())
    member_cap = node.membership.caps[0]
    # two refusals, counted by the call itself: made outside any assert (python -O drops those)
    refused = [member_cap.admits(3) for _ in range(2)]
    assert refused == [False, False]
    types, samples = scrape(NodeCollector(node))  # type: ignore[arg-type]

    assert value(samples, "mesh_members", state="active") == 2
    assert value(samples, "mesh_members", state="draining") == 1
    assert value(samples, "mesh_peers", state="connected") == 2
    assert value(samples, "mesh_peers", state="retrying") == 1
    assert value(samples, "mesh_peers", state="connecting") == 0  # every state shows
    assert value(samples, "mesh_distributors", state="connecting") == 1
    assert value(samples, "mesh_events_total", type="member_joined") == 2
    assert value(samples, "mesh_events_total", type="member_left") == 0
    assert value(samples, "mesh_retries_total", link="distributor") == 3
    assert value(samples, "mesh_limit_refusals_total", limit="members") == 2
    assert value(samples, "mesh_limit_refusals_total", limit="tombstones") == 0
    assert value(samples, "mesh_bytes_sent_total", link="peer") == 1234
    assert value(samples, "mesh_frames_received_total", link="distributor") == 7
    assert value(samples, "mesh_handshakes_failed_total", reason="auth_failed") == 1
    assert value(samples, "mesh_requests_handled_total", method="echo", outcome="ok") == 5
    assert value(samples, "mesh_requests_total", method="echo", outcome="ok") == 1
    duration = "mesh_request_duration_seconds"
    assert value(samples, f"{duration}_bucket", mode="direct", le="0.00025") == 0
    assert value(samples, f"{duration}_bucket", mode="direct", le="0.0005") == 1
    assert value(samples, f"{duration}_count", mode="service") == 0
    assert types[duration] == "histogram"
    assert types["mesh_event_loop_lag_seconds"] == "histogram"

    # the state is read again at every scrape: no cost between scrapes, never stale
    node.mesh.peers["c"].status.succeeded()
    _, samples = scrape(NodeCollector(node))  # type: ignore[arg-type]
    assert value(samples, "mesh_peers", state="connected") == 3


def check_conventions(text: str) -> None:
    """mesh_ prefix, counters in _total, histograms in base units, a help text each."""
    families = list(text_string_to_metric_families(text))
    assert families
    for family in families:
        name, kind = family.name, family.type
        assert name.startswith("mesh_") and family.documentation, name
        assert kind in ("counter", "gauge", "histogram"), (name, kind)
        if kind == "histogram":
            assert name.endswith("_seconds"), name
        if kind == "counter":  # the parser strips _total from the family's name
            assert {s.name for s in family.samples} <= {f"{name}_total"}, name
        if kind == "gauge":
            assert not name.endswith("_total"), name


def test_node_families_follow_the_naming_conventions() -> None:
    stats = NodeStats()
    stats.request_done("echo", "direct", "ok", 0.001, builtin_handlers())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(fake_node(stats, LoopLag())))  # type: ignore[arg-type]
    check_conventions(generate_latest(registry).decode())


# -- the distributor's collector ------------------------------------------------------


def distributor_state() -> tuple[Registry, Any, DistributorStats]:
    registry = Registry("epoch-1")
    registry.register(member(1), 1.0)
    registry.register(member(2, draining=True), 2.0)
    watchers = SimpleNamespace(registry=registry, parked=4, streams=2)
    stats = DistributorStats(LoopLag())
    return registry, watchers, stats


def test_the_distributor_collector_reads_the_registry_and_counts() -> None:
    registry, watchers, stats = distributor_state()
    stats.events[MemberJoined.TYPE] += 2
    stats.events[MemberLeft.TYPE] += 1
    stats.departures["timeout"] += 1
    stats.refusals.rejected["members_full"] += 1
    stats.traffic.bytes_received = 99
    types, samples = scrape(DistributorCollector(watchers, stats))
    assert value(samples, "mesh_members", state="active") == 1
    assert value(samples, "mesh_members", state="draining") == 1
    assert value(samples, "mesh_watchers", kind="blocking_query") == 4
    assert value(samples, "mesh_watchers", kind="event_stream") == 2
    assert value(samples, "mesh_events_total", type="member_joined") == 2
    assert value(samples, "mesh_events_total", type="member_left") == 1
    assert value(samples, "mesh_departures_total", reason="timeout") == 1
    assert value(samples, "mesh_departures_total", reason="leave") == 0
    assert value(samples, "mesh_connections_rejected_total", reason="members_full") == 1
    assert value(samples, "mesh_bytes_received_total", link="node") == 99
    assert types["mesh_events"] == "counter" and types["mesh_members"] == "gauge"
    exposition = CollectorRegistry(auto_describe=False)
    exposition.register(DistributorCollector(watchers, stats))  # type: ignore[arg-type]
    check_conventions(generate_latest(exposition).decode())

    registry.unregister(member(1), "leave")  # read live at the next scrape
    _, samples = scrape(DistributorCollector(watchers, stats))
    assert value(samples, "mesh_members", state="active") == 0


# -- /metrics -----------------------------------------------------------------------


async def get_metrics(app: web.Application) -> tuple[int, str, str]:
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_route_serves_the_text_format_with_process_metrics() -> None:
    _, watchers, stats = distributor_state()
    app = web.Application()
    add_route(app, DistributorCollector(watchers, stats))
    status, content_type, text = await get_metrics(app)
    assert status == 200
    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    types, samples = parse(text)
    assert value(samples, "mesh_members", state="active") == 1
    assert "process_resident_memory_bytes" in types  # the process collector, ours alone


async def test_apps_in_one_process_have_registries_of_their_own() -> None:
    """Tests and benchmarks build several nodes and distributors in one process."""
    texts = []
    for members in (1, 3):
        registry = Registry("epoch")
        for i in range(members):
            registry.register(member(i), 1.0)
        app = distributor_app(registry, VersionWatch(), stats=DistributorStats(LoopLag()))
        status, _, text = await get_metrics(app)
        assert status == 200
        texts.append(text)
    counts = [value(parse(t)[1], "mesh_members", state="active") for t in texts]
    assert counts == [1, 3]


async def test_a_distributor_app_without_a_server_still_serves_its_gauges() -> None:
    app = distributor_app(Registry("epoch"), VersionWatch())
    status, _, text = await get_metrics(app)
    types, _ = parse(text)
    assert status == 200 and {"mesh_members", "mesh_watchers"} <= set(types)


@pytest.mark.parametrize("program", ["distributor.__main__", "node.run"])
def test_prometheus_client_is_not_imported_at_start(program: str) -> None:
    """It is imported at the first scrape (shared/metrics.py): a process never scraped
    does not carry it."""
    check = f"import sys, {program}; print('prometheus_client' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
