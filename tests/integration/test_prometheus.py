"""A real Prometheus (Debian's 2.42, fetched by `make setup`) finds every node through the
distributor's HTTP service discovery, with the shipped configuration's relabelling, and
scrapes them all."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.ports import free_port
from harness.procs import http
from harness.waiting import wait_for
from tests.integration.cluster import full_mesh, status

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "build" / "prometheus" / "prometheus"
SHIPPED_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def api(port: int, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}{query}", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]


def up_targets(port: int) -> dict[str, set[str]]:
    """job -> the `node` (mesh) or instance (distributor) labels of its healthy targets."""
    found: dict[str, set[str]] = {}
    for target in api(port, "targets", state="active")["activeTargets"]:
        if target["health"] == "up":
            labels = target["labels"]
            found.setdefault(labels["job"], set()).add(labels.get("node", labels["instance"]))
    return found


@pytest.fixture
def prometheus(tmp_path: Path):
    """Start Prometheus with the shipped configuration, pointed at a distributor on loopback
    (its HTTP port given later) and with 1 s intervals; yields a function that starts it."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run `make setup` (scripts/prometheus.sh)"
    started: list[subprocess.Popen[bytes]] = []

    def start(distributor_http: int) -> int:
        config = SHIPPED_CONFIG.read_text()
        config = config.replace("distributor:9100", f"127.0.0.1:{distributor_http}")
        config = config.replace(": 5s", ": 1s")
        path = tmp_path / "prometheus.yml"
        path.write_text(config)
        port = free_port()
        with open(tmp_path / "prometheus.out", "ab") as out:
            started.append(
                subprocess.Popen(
                    [
                        str(PROMETHEUS),
                        f"--config.file={path}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_for("prometheus ready", lambda: api(port, "status/buildinfo")["version"])
        return port

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_discovers_scrapes_and_follows_the_mesh(make_cluster, prometheus) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    nodes = [
        cluster.node("n0", extra=["--service", "goods", "--meta", "zone-a=x"]),
        cluster.node("n1"),
        cluster.node("n2"),
    ]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    port = prometheus(distributor.http_port)

    wait_for(
        "every node and the distributor up",
        lambda: (
            up_targets(port)
            == {"mesh": {"n0", "n1", "n2"}, "distributor": {f"127.0.0.1:{distributor.http_port}"}}
        ),
    )
    # the shipped relabelling: mesh_* labels as plain target labels
    target = next(
        t["labels"]
        for t in api(port, "targets", state="active")["activeTargets"]
        if t["labels"].get("node") == "n0"
    )
    assert target["member_id"] == ids["n0"]
    assert target["services"] == "goods" and target["draining"] == "false"
    assert target["meta_zone_a"] == "x"
    assert not [name for name in target if name.startswith("mesh_")]

    # up is 1 for each, through Prometheus' own query API
    up = api(port, "query", query='up{job="mesh"}')["result"]
    assert {r["metric"]["node"]: r["value"][1] for r in up} == {"n0": "1", "n1": "1", "n2": "1"}

    # a killed node leaves the target list (the distributor drops it, discovery follows)
    nodes[2].kill()
    wait_for("n2 gone from the targets", lambda: up_targets(port).get("mesh") == {"n0", "n1"})

    # a number the test moves is what Prometheus reads
    for _ in range(7):
        assert (
            http("POST", nodes[0].http_port, "/v1/request", {"to": "n1", "method": "echo"})[0]
            == 200
        )
    query = 'sum(mesh_requests_total{job="mesh", node="n0", method="echo", outcome="ok"})'

    def seen() -> bool:
        result = api(port, "query", query=query)["result"]
        return bool(result) and float(result[0]["value"][1]) >= 7

    wait_for("Prometheus sees the 7 requests", seen)
    assert status(nodes[0])["members"]
