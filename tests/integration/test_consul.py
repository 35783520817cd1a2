"""The Consul HTTP subset against real processes, read by the real client: py-consul
(DESIGN.md, "Speaking Consul and DNS"). Never a mock of the client."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import consul
import orjson
import pytest
from consul.exceptions import BadRequest

from harness.procs import Proc, http
from harness.waiting import wait_for
from tests.integration.cluster import Cluster, full_mesh


def register(agent: Proc, definition: dict[str, Any]) -> None:
    """PUT /v1/agent/service/register as Consul's clients send it: no Content-Type."""
    raw = orjson.dumps(definition)
    assert http("PUT", agent.http_port, "/v1/agent/service/register", raw=raw)[0] == 200


def client(proc: Proc, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=proc.http_port, token=token)


def raw_get(proc: Proc, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET: status, headers and body, for answers py-consul would not show."""
    url = f"http://127.0.0.1:{proc.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Blocked:
    """A py-consul call made in a thread (it blocks): its result, and how long it took."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.seconds = -1.0
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            self.result = call()
        except BaseException as exc:  # shown by join()
            self.error = exc
        self.seconds = time.monotonic() - started

    def join(self, timeout: float = 60) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the blocking query never returned"
        if self.error is not None:
            raise self.error
        return self.result


def mesh_of_two(cluster: Cluster) -> tuple[Proc, Proc, Proc]:
    distributor = cluster.distributor()
    n1 = cluster.node("n1", extra=["--tag", "v2", "--meta", "zone=a"])
    n2 = cluster.node("n2")
    wait_for("the two nodes are linked", lambda: full_mesh([n1, n2]))
    return distributor, n1, n2


def services_seen(proc: Proc) -> dict[str, list[str]]:
    return client(proc).catalog.services()[1]


def check_catalog_and_health(proc: Proc, n1_id: str) -> None:
    """What py-consul reads of goods-1 (on n1) through `proc`."""
    c = client(proc)
    index, services = c.catalog.services()
    assert int(index) >= 1
    assert services == {"goods": ["v1"], "mesh": ["v2"]}

    index, entries = c.catalog.service("goods")
    (entry,) = entries
    assert entry["Node"] == "n1" and entry["ID"].replace("-", "") == n1_id
    assert (entry["ServiceID"], entry["ServiceName"]) == ("goods-1", "goods")
    assert (entry["ServiceAddress"], entry["ServicePort"], entry["ServiceTags"]) == (
        "127.0.0.1",
        1234,
        ["v1"],
    )
    assert entry["NodeMeta"] == {"zone": "a"} and entry["Datacenter"] == "dc1"
    assert c.catalog.service("goods", tag="v1")[1] == entries
    assert c.catalog.service("goods", tag="v9")[1] == []

    (mesh_n1,) = [e for e in c.catalog.service("mesh")[1] if e["Node"] == "n1"]
    assert mesh_n1["ServiceID"] == "mesh" and mesh_n1["ServiceTags"] == ["v2"]
    assert {e["Node"] for e in c.catalog.service("mesh")[1]} == {"n1", "n2"}
    assert {n["Node"] for n in c.catalog.nodes()[1]} == {"n1", "n2"}

    index, healthy = c.health.service("goods", passing=True)
    (entry,) = healthy
    assert entry["Service"]["ID"] == "goods-1" and entry["Node"]["Node"] == "n1"
    checks = [(check["CheckID"], check["Status"]) for check in entry["Checks"]]
    assert checks == [("serfHealth", "passing"), ("service:goods-1", "passing")]


def test_py_consul_reads_the_distributor_then_a_node_with_the_distributor_killed(
    make_cluster: Callable[..., Cluster],
) -> None:
    distributor, n1, n2 = mesh_of_two(make_cluster(steady=True))
    register(
        n1, {"name": "goods", "id": "goods-1", "address": "127.0.0.1", "port": 1234, "tags": ["v1"]}
    )
    n1_id = n1.get("/v1/status")["id"]
    for proc in (distributor, n2):
        wait_for(f"{proc.name} sees goods", lambda p=proc: "goods" in services_seen(p))

    check_catalog_and_health(distributor, n1_id)
    me = client(distributor).agent.self()
    assert me["Config"]["Datacenter"] == "dc1" and me["Config"]["Server"] is True
    assert client(distributor).status.leader() == f"127.0.0.1:{distributor.http_port}"

    distributor.kill()
    check_catalog_and_health(n2, n1_id)
    me = client(n2).agent.self()
    assert me["Config"]["NodeName"] == "n2" and me["Member"]["Name"] == "n2"
    assert all(isinstance(value, dict) for value in me.values())
    assert client(n2).status.leader() == f"127.0.0.1:{n2.http_port}"


def test_a_blocking_catalog_query_is_woken_by_a_registration(
    make_cluster: Callable[..., Cluster],
) -> None:
    distributor, n1, n2 = mesh_of_two(make_cluster(steady=True))
    for proc in (distributor, n2):
        shop = f"shop-{proc.name}"  # a service new to both
        index, services = client(proc).catalog.services()
        assert shop not in services
        blocked = Blocked(lambda p=proc, i=index: client(p).catalog.services(index=i, wait="30s"))
        time.sleep(0.5)  # parked by now (a query that had not been would still see the change)
        register(n1, {"name": shop, "id": shop, "port": 80})
        new_index, services = blocked.join()
        assert blocked.seconds < 20, blocked.seconds  # woken, not timed out
        assert int(new_index) > int(index) and shop in services


@pytest.mark.parametrize("ask", ["distributor", "n2"])
def test_a_health_watcher_of_one_service_sleeps_through_another_and_wakes_on_its_own(
    make_cluster: Callable[..., Cluster], ask: str
) -> None:
    distributor, n1, n2 = mesh_of_two(make_cluster(steady=True))
    proc = {"distributor": distributor, "n2": n2}[ask]
    register(n1, {"name": "a", "id": "a-1", "port": 1})
    wait_for("a is seen", lambda: "a" in services_seen(proc))
    index, _ = client(proc).health.service("a")

    # "b" changes: the watcher of "a" answers only when its wait ends, at the same index
    blocked = Blocked(lambda: client(proc).health.service("a", index=index, wait="3s"))
    time.sleep(0.5)
    register(n1, {"name": "b", "id": "b-1", "port": 2})
    wait_for("b is seen", lambda: "b" in services_seen(proc))
    same, entries = blocked.join()
    assert blocked.seconds >= 2.5, f"woken by a change of another service ({blocked.seconds:.2f} s)"
    assert same == index and [e["Service"]["ID"] for e in entries] == ["a-1"]

    # "a" changes: woken at once, with a higher index
    blocked = Blocked(lambda: client(proc).health.service("a", index=index, wait="20s"))
    time.sleep(0.5)
    register(n1, {"name": "a", "id": "a-2", "port": 3})
    newer, entries = blocked.join()
    assert blocked.seconds < 10, blocked.seconds
    assert int(newer) > int(index)
    assert sorted(e["Service"]["ID"] for e in entries) == ["a-1", "a-2"]


def test_py_consul_registers_a_service_with_an_http_check_and_deregisters_it(
    make_cluster: Callable[..., Cluster],
) -> None:
    distributor, n1, n2 = mesh_of_two(make_cluster(steady=True))
    agent = client(n1)
    healthz = f"http://127.0.0.1:{n1.http_port}/healthz"
    assert agent.agent.service.register(
        "web",
        service_id="web-1",
        address="127.0.0.1",
        port=n1.http_port,
        tags=["blue"],
        check=consul.Check.http(healthz, interval="1s"),
    )

    def passing_on(proc: Proc) -> list[str]:
        return [e["Service"]["ID"] for e in client(proc).health.service("web", passing=True)[1]]

    for proc in (n1, n2, distributor):  # the check passes, and the mesh hears of it
        wait_for(f"web-1 passing on {proc.name}", lambda p=proc: passing_on(p) == ["web-1"])
    service = agent.agent.services()["web-1"]
    assert (service["Service"], service["Port"], service["Tags"]) == ("web", n1.http_port, ["blue"])
    check = agent.agent.checks()["service:web-1"]
    assert (check["Status"], check["ServiceID"], check["Type"]) == ("passing", "web-1", "http")
    assert "200" in check["Output"]

    assert agent.agent.service.deregister("web-1")
    assert "web-1" not in agent.agent.services()
    for proc in (n1, n2, distributor):
        wait_for(f"web gone on {proc.name}", lambda p=proc: "web" not in services_seen(p))


def test_refusals_and_404s_as_consul_answers_them(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    node = cluster.node("n1")
    for proc in (distributor, node):
        c = client(proc)
        with pytest.raises(consul.ConsulException, match="No path to datacenter"):
            c.catalog.services(dc="other")
        with pytest.raises(BadRequest, match="filter"):
            c.catalog.services(filter_expr='ServiceName == "x"')
        for bad in ("index=abc", "index=1&wait=forever", "index=-1", "index=1&wait=30"):
            status, headers, body = raw_get(proc, f"/v1/catalog/services?{bad}")
            assert status == 400, (bad, body)
        status, headers, body = raw_get(proc, "/v1/kv/some/key")
        assert (status, body) == (404, b"404 page not found\n")
        assert headers["X-Consul-KnownLeader"] == "true" and int(headers["X-Consul-Index"]) >= 1
        status, headers, body = raw_get(proc, "/v1/health/nothing-here")
        assert status == 404
        # the mesh's own API is untouched by Consul's 404s
        assert raw_get(proc, "/healthz")[0] == 200
        # other parameters Consul allows are accepted
        ok = "/v1/catalog/services?stale&consistent&cached&near=_agent&node-meta=zone:a"
        assert raw_get(proc, ok)[0] == 200
    assert raw_get(node, "/v1/status")[0] == 200


def test_the_http_token_is_accepted_as_consuls_token(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(steady=True)
    node = cluster.node("n1", env={"MESH_HTTP_TOKEN": "s3cret"}, distributor=False)
    with pytest.raises(consul.ACLDisabled):  # py-consul's name for a 401
        client(node).catalog.services()
    assert "mesh" in client(node, token="s3cret").catalog.services()[1]  # X-Consul-Token
    assert raw_get(node, "/v1/catalog/services?token=s3cret")[0] == 200
    assert raw_get(node, "/v1/catalog/services?token=wrong")[0] == 401


def test_a_node_shows_a_peer_it_cannot_reach_as_serf_critical_and_wakes_its_watchers(
    make_cluster: Callable[..., Cluster],
) -> None:
    distributor, n1, n2 = mesh_of_two(make_cluster(steady=True))
    register(n1, {"name": "goods", "id": "goods-1", "port": 1234})
    c = client(n2)
    wait_for("goods passing on n2", lambda: len(c.health.service("goods", passing=True)[1]) == 1)
    distributor.kill()  # so nothing tells n2 that n1 is gone: only its link says so
    index, _ = c.health.service("goods")
    blocked = Blocked(lambda: client(n2).health.service("goods", index=index, wait="60s"))
    n1.signal(signal.SIGSTOP)  # frozen: heartbeats stop, the link goes down on n2
    try:
        newer, entries = blocked.join()
        assert blocked.seconds < 45, blocked.seconds
        assert int(newer) > int(index)
        (entry,) = entries
        statuses = [(check["CheckID"], check["Status"]) for check in entry["Checks"]]
        assert statuses == [("serfHealth", "critical"), ("service:goods-1", "passing")]
        assert c.health.service("goods", passing=True)[1] == []
    finally:
        n1.signal(signal.SIGCONT)
    wait_for("n1 reachable again", lambda: len(c.health.service("goods", passing=True)[1]) == 1)
