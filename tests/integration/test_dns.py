"""DNS on real processes, asked by a real client: dig (DESIGN.md, "Speaking Consul and DNS")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.ports import free_port
from harness.procs import Proc
from harness.waiting import wait_for
from tests.integration.cluster import Cluster
from tests.integration.dig import Answer, dig
from tests.integration.test_instances import register

TRANSPORTS = {"udp": (), "tcp": ("+tcp",)}


def dns_node(cluster: Cluster, name: str) -> tuple[Proc, int]:
    port = free_port()
    return cluster.node(name, extra=["--dns-port", str(port)]), port


def dns_distributor(cluster: Cluster) -> tuple[Proc, int]:
    port = free_port()
    return cluster.distributor(env={"MESH_DNS_PORT": str(port)}), port


def goods(id: str, port: int, address: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    return {"name": "goods", "id": id, "address": address, "port": port, **extra}


def seen_by(proc: Proc, service: str, want: dict[str, str]) -> bool:
    """`proc` sees exactly these instances of `service` (id -> health)."""
    found = proc.get(f"/v1/services/{service}").get("instances", [])
    return {i["id"]: i["health"] for i in found} == want


@pytest.fixture
def mesh(make_cluster: Callable[..., Cluster]) -> dict[str, Any]:
    """A distributor and two nodes, all answering DNS; three healthy instances of goods:
    on n1 at its own address, on n2 at its own address and at another one."""
    cluster = make_cluster(steady=True)
    distributor, distributor_dns = dns_distributor(cluster)
    n1, n1_dns = dns_node(cluster, "n1")
    n2, n2_dns = dns_node(cluster, "n2")
    assert register(n1, goods("goods-1", 1234, tags=["v1"]))[0] == 200
    assert register(n2, goods("goods-2", 1235, tags=["v2"]))[0] == 200
    assert register(n2, goods("goods-3", 1236, address="127.0.0.3"))[0] == 200
    want = {"goods-1": "passing", "goods-2": "passing", "goods-3": "passing"}
    for proc in (distributor, n1, n2):
        wait_for(f"{proc.name} sees the three instances", lambda p=proc: seen_by(p, "goods", want))
    # and the nodes' links are up (a node answers for its peers while connected)
    for node in (n1, n2):
        wait_for(
            f"{node.name} is linked to its peer",
            lambda n=node: (
                all(p["state"] == "connected" for p in n.get("/v1/status")["peers"])
                and len(n.get("/v1/status")["peers"]) == 1
            ),
        )
    return {
        "cluster": cluster,
        "ports": {"distributor": distributor_dns, "n1": n1_dns, "n2": n2_dns},
        "procs": {"distributor": distributor, "n1": n1, "n2": n2},
    }


ALL_SRV = {(1234, "n1.node.mesh."), (1235, "n2.node.mesh."), (1236, "7f000003.addr.mesh.")}


@pytest.fixture
def ask(mesh: dict[str, Any], who: str, transport: str) -> Callable[[str, str], Answer]:
    """dig at `who` (a parameter of the test, as `transport` is): (name, rdtype) -> answer."""
    port, options = mesh["ports"][who], TRANSPORTS[transport]
    return lambda name, rdtype: dig(port, name, rdtype, *options)


# each process that answers for the whole mesh, over each transport
EVERY_ANSWERER = pytest.mark.parametrize(
    ("who", "transport"), [(who, t) for t in TRANSPORTS for who in ("n1", "distributor")]
)


@EVERY_ANSWERER
def test_service_names_answer_a_and_srv_with_an_address_for_every_srv(
    ask: Callable[[str, str], Answer], transport: str
) -> None:
    answer = ask("goods.service.mesh", "SRV")
    assert answer.transport == transport.upper(), answer.text
    assert answer.status == "NOERROR" and "aa" in answer.flags and "tc" not in answer.flags
    assert answer.srv() == ALL_SRV
    # the additional section: one address for each SRV record, for its target
    assert sorted(answer.records("ADDITIONAL", "A")) == sorted(
        [
            ("n1.node.mesh.", "A", "127.0.0.1"),
            ("n2.node.mesh.", "A", "127.0.0.1"),
            ("7f000003.addr.mesh.", "A", "127.0.0.3"),
        ]
    )
    answer = ask("goods.service.mesh", "A")
    assert sorted(answer.data("ANSWER", "A")) == ["127.0.0.1", "127.0.0.3"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("who", ["n2"])
def test_tags_rfc_2782_node_and_addr_names(ask: Callable[[str, str], Answer]) -> None:
    assert ask("v1.goods.service.mesh", "SRV").srv() == {(1234, "n1.node.mesh.")}
    assert ask("V2.Goods.SERVICE.mesh", "SRV").srv() == {(1235, "n2.node.mesh.")}
    assert ask("_goods._tcp.service.mesh", "SRV").srv() == ALL_SRV
    assert ask("_goods._tcp.mesh", "SRV").srv() == ALL_SRV
    assert ask("_goods._v2.service.mesh", "SRV").srv() == {(1235, "n2.node.mesh.")}
    assert ask("n1.node.mesh", "A").data() == ["127.0.0.1"]
    assert ask("7f000003.addr.mesh", "A").data() == ["127.0.0.3"]
    assert ask("goods.service.dc1.mesh", "SRV").srv() == ALL_SRV


@EVERY_ANSWERER
def test_nxdomain_with_soa_noerror_without_answer_and_refused(
    ask: Callable[[str, str], Answer],
) -> None:
    answer = ask("nobody.service.mesh", "A")
    assert answer.status == "NXDOMAIN" and not answer.records("ANSWER")
    assert [rdtype for _, rdtype, _ in answer.records("AUTHORITY")] == ["SOA"]
    answer = ask("goods.service.mesh", "TXT")
    assert answer.status == "NOERROR" and not answer.records("ANSWER")
    assert [rdtype for _, rdtype, _ in answer.records("AUTHORITY")] == ["SOA"]
    answer = ask("example.com", "A")
    assert answer.status == "REFUSED" and not answer.records("ANSWER")


def test_a_critical_instance_is_left_out(mesh: dict[str, Any]) -> None:
    n1, ports = mesh["procs"]["n1"], mesh["ports"]
    check = {"tcp": "127.0.0.1:1", "interval": "200ms"}  # nothing listens there
    assert register(n1, goods("goods-bad", 1299, address="127.0.0.9", check=check))[0] == 200
    assert register(n1, {"name": "broken", "id": "b1", "port": 1300, "check": check})[0] == 200
    for who in ("n1", "n2", "distributor"):
        proc = mesh["procs"][who]
        wait_for(
            f"{who} sees goods-bad critical",
            lambda p=proc: (
                {i["id"]: i["health"] for i in p.get("/v1/services/goods")["instances"]}.get(
                    "goods-bad"
                )
                == "critical"
            ),
        )
        assert dig(ports[who], "goods.service.mesh", "SRV").srv() == ALL_SRV
        assert "127.0.0.9" not in dig(ports[who], "goods.service.mesh", "A").data()
        # a service whose only instance is critical does not exist
        assert dig(ports[who], "broken.service.mesh", "SRV").status == "NXDOMAIN"


def test_a_peer_whose_link_is_down_is_left_out_by_a_node_but_not_by_the_distributor(
    mesh: dict[str, Any],
) -> None:
    n2, ports = mesh["procs"]["n2"], mesh["ports"]
    n2.kill()  # n1 sees its link drop; the distributor sees it leave
    wait_for(
        "n1 no longer answers n2's instances",
        lambda: dig(ports["n1"], "goods.service.mesh", "SRV").srv() == {(1234, "n1.node.mesh.")},
    )
    wait_for(
        "the distributor no longer answers them",
        lambda: (
            dig(ports["distributor"], "goods.service.mesh", "SRV").srv()
            == {(1234, "n1.node.mesh.")}
        ),
    )


def test_without_edns_an_answer_is_cut_to_whole_pairs_with_tc(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(steady=True)
    cluster.distributor()
    node, port = dns_node(cluster, "n1")
    for i in range(24):
        assert register(node, goods(f"goods-{i}", 2000 + i, address=f"127.0.1.{i + 1}"))[0] == 200
    wait_for(
        "24 instances", lambda: len(dig(port, "goods.service.mesh", "SRV", "+tcp").srv()) == 24
    )
    # UDP, no EDNS: 512 bytes at most, so fewer records, each with its address, and TC
    cut = dig(port, "goods.service.mesh", "SRV", "+noedns", "+ignore")
    assert cut.transport == "UDP" and "tc" in cut.flags, cut.text
    assert 0 < len(cut.srv()) < 24
    targets = sorted(target for _, target in cut.srv())
    assert sorted(owner for owner, _, _ in cut.records("ADDITIONAL", "A")) == targets
    assert "MSG SIZE  rcvd: " in cut.text
    size = int(cut.text.split("MSG SIZE  rcvd: ")[1].split()[0])
    assert size <= 512
    # dig's own reaction to TC: it asks again over TCP and gets them all
    retried = dig(port, "goods.service.mesh", "SRV", "+noedns")
    assert retried.transport == "TCP" and len(retried.srv()) == 24 and "tc" not in retried.flags
    # with EDNS the query offers room for all of them
    whole = dig(port, "goods.service.mesh", "SRV", "+bufsize=4096")
    assert whole.transport == "UDP" and len(whole.srv()) == 24 and "tc" not in whole.flags
    assert len(whole.records("ADDITIONAL", "A")) == 24


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_instance_address_that_is_a_host_name_is_resolved_by_the_answering_process(
    make_cluster: Callable[..., Cluster], transport: str
) -> None:
    cluster = make_cluster(steady=True)
    cluster.distributor()
    node, port = dns_node(cluster, "n1")
    assert register(node, goods("goods-h", 1240, address="localhost"))[0] == 200
    wait_for("registered", lambda: seen_by(node, "goods", {"goods-h": "passing"}))
    options = TRANSPORTS[transport]
    # localhost is not the node's advertise host: the target is the address's own name
    answer = dig(port, "goods.service.mesh", "SRV", *options)
    assert answer.srv() == {(1240, "7f000001.addr.mesh.")}, answer.text
    assert answer.records("ADDITIONAL", "A") == [("7f000001.addr.mesh.", "A", "127.0.0.1")]
    assert dig(port, "goods.service.mesh", "A", *options).data() == ["127.0.0.1"]
