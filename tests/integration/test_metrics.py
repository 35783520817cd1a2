"""GET /metrics on real processes on loopback: the families are there, and the numbers move
with what the test does (joins, requests, a kill, bad connections, retries); the token.

Scraped as Prometheus would and read with prometheus-client's own parser.
"""

from __future__ import annotations

import signal
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from harness.ports import free_port
from harness.procs import Proc, http
from harness.waiting import wait_for
from shared.framing import encode_frame
from shared.wire import PROTOCOL_VERSION, Hello
from tests.integration.cluster import Cluster, full_mesh

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "metrics-t0ken"


def get_metrics(proc: Proc, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{proc.http_port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(proc: Proc, token: str | None = None) -> Samples:
    status, content_type, text = get_metrics(proc, token)
    assert status == 200, (status, text)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def metric(proc: Proc, name: str, **labels: str) -> float:
    """One sample's value now; 0 when the series does not exist (yet)."""
    return scrape(proc).get((name, frozenset(labels.items())), 0.0)


def until_metric(proc: Proc, name: str, check: Callable[[float], bool], **labels: str) -> float:
    def holds() -> float | None:
        value = metric(proc, name, **labels)
        return value if check(value) else None

    wait_for(f"{proc.name} {name}{labels} to pass its check", lambda: holds() is not None)
    return metric(proc, name, **labels)


def request(node: Proc, **body: object) -> int:
    return http("POST", node.http_port, "/v1/request", body)[0]


def test_numbers_move_with_joins_requests_and_a_kill(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    distributor = cluster.distributor()
    assert metric(distributor, "mesh_members", state="active") == 0
    assert metric(distributor, "mesh_events_total", type="member_joined") == 0
    a = cluster.node("a")
    b = cluster.node("b", extra=["--service", "goods"])
    c = cluster.node("c")
    wait_for("a full mesh", lambda: full_mesh([a, b, c]))

    # the distributor: joins sent on, members by state, traffic on the nodes' links
    assert metric(distributor, "mesh_members", state="active") == 3
    assert metric(distributor, "mesh_events_total", type="member_joined") >= 3
    assert metric(distributor, "mesh_frames_received_total", link="node") > 0
    assert metric(distributor, "mesh_bytes_sent_total", link="node") > 0
    assert metric(distributor, "mesh_event_loop_lag_seconds_count") > 0
    # a node: peers and distributors by state, the snapshot and deltas it applied
    assert metric(a, "mesh_peers", state="connected") == 2
    assert metric(a, "mesh_distributors", state="connected") == 1
    assert metric(a, "mesh_members", state="active") == 2
    assert metric(a, "mesh_events_total", type="snapshot") >= 1

    # requests: by method and outcome on the caller, handled on the callee, latency
    peer_bytes = metric(a, "mesh_bytes_sent_total", link="peer")
    for i in range(5):
        assert request(a, to="b", method="echo", body={"i": i}) == 200
    assert request(a, service="goods", method="echo") == 200
    assert request(a, to="b", method="no-such-method") == 502
    assert request(a, to="nobody", method="ping") == 404
    samples = scrape(a)

    def at(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert at("mesh_requests_total", method="echo", outcome="ok") == 6
    assert at("mesh_requests_total", method="other", outcome="error") == 1  # bounded labels
    assert at("mesh_requests_total", method="ping", outcome="not_found") == 1
    assert at("mesh_request_duration_seconds_count", mode="direct") == 7
    assert at("mesh_request_duration_seconds_count", mode="service") == 1
    assert at("mesh_request_duration_seconds_bucket", mode="direct", le="+Inf") == 7
    assert at("mesh_bytes_sent_total", link="peer") > peer_bytes
    assert metric(b, "mesh_requests_handled_total", method="echo", outcome="ok") == 6
    assert metric(b, "mesh_requests_handled_total", method="other", outcome="error") == 1

    # a killed node: the distributor says it left (closed), the others lose a peer
    c.signal(signal.SIGKILL)
    until_metric(a, "mesh_peers", lambda v: v == 1, state="connected")
    until_metric(distributor, "mesh_departures_total", lambda v: v == 1, reason="closed")
    assert metric(distributor, "mesh_members", state="active") == 2
    assert metric(distributor, "mesh_events_total", type="member_left") == 1
    until_metric(a, "mesh_events_total", lambda v: v >= 1, type="member_left")


def test_bad_connections_are_counted_by_reason(make_cluster: Callable[..., Cluster]) -> None:
    distributor = make_cluster().distributor()
    address = ("127.0.0.1", distributor.port)

    with socket.create_connection(address, timeout=10) as sock:  # not a frame at all
        sock.sendall(struct.pack(">I", 2) + b"{]")
        assert sock.recv(65536) is not None  # read until it closes (or answers and closes)
    until_metric(distributor, "mesh_handshakes_failed_total", lambda v: v == 1, reason="protocol")

    too_new = Hello(
        "x" * 32,
        "future",
        "127.0.0.1:1",
        1,
        version=PROTOCOL_VERSION + 1,
        min_version=PROTOCOL_VERSION + 1,
    )
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(encode_frame(too_new))
        sock.recv(65536)
    until_metric(
        distributor,
        "mesh_handshakes_failed_total",
        lambda v: v == 1,
        reason="unsupported_version",
    )

    socket.create_connection(address, timeout=10).close()  # gone before its hello
    until_metric(distributor, "mesh_handshakes_failed_total", lambda v: v == 1, reason="closed")
    assert metric(distributor, "mesh_connections_rejected_total", reason="handshake_limit") == 0


def test_retries_are_counted_while_no_distributor_answers(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    nowhere = free_port()  # nothing listens there
    node = cluster.node(
        "lonely", distributor=False, extra=["--distributor", f"127.0.0.1:{nowhere}"]
    )
    until_metric(node, "mesh_retries_total", lambda v: v >= 3, link="distributor")
    assert metric(node, "mesh_distributors", state="connected") == 0


def test_metrics_need_the_token(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    distributor = cluster.distributor({"MESH_HTTP_TOKEN": TOKEN})
    node = cluster.node("a", {"MESH_HTTP_TOKEN": TOKEN})
    for proc in (distributor, node):
        status, _, _ = get_metrics(proc)
        assert status == 401, proc.name
        status, _, _ = get_metrics(proc, token="wrong")
        assert status == 401, proc.name
        samples = scrape(proc, token=TOKEN)  # 200, the text format
        assert ("mesh_members", frozenset({("state", "active")})) in samples
