"""shared/dnsview.py: DNS answers from a view of the mesh, bytes in and bytes out."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from shared.config import join_address
from shared.dnsview import DnsView, Reply, View, address_label, parse_query
from shared.wire import Instance, Member

HOST_A, HOST_B = "10.0.0.1", "10.0.0.2"


def instance(
    id: str,
    address: str,
    port: int,
    service: str = "goods",
    tags: Sequence[str] = (),
    health: str = "passing",
) -> Instance:
    return Instance(id, service, address, port, tuple(tags), (), health)


def member(name: str, host: str, *instances: Instance, draining: bool = False) -> Member:
    address = join_address(host, 9010)
    return Member(f"{name}-id", name, address, 1, draining=draining, instances=instances)


ALPHA = member(
    "alpha",
    HOST_A,
    instance("g1", HOST_A, 8001, tags=["v1", "Blue"]),
    instance("g2", HOST_A, 8002, tags=["v2"]),
    instance("s1", HOST_A, 7001, service="stock"),
)
BETA = member("beta", HOST_B, instance("g3", HOST_B, 8003, tags=["v1"]))
VIEW: View = [(ALPHA, True), (BETA, True)]


def keep_order(items: list[Any]) -> None:
    """No shuffling: tests see answers in the view's order."""


def ask(
    name: str,
    rdtype: str = "SRV",
    view: View = VIEW,
    *,
    tcp: bool = False,
    edns: int | None = None,
    domain: str = "mesh",
    shuffle: Any = keep_order,
    resolved: Any = None,
) -> tuple[Reply, dns.message.Message]:
    """One query through the view: the reply and its bytes parsed back, one record a set."""
    if edns is None:
        query = dns.message.make_query(name, rdtype)
    else:
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=edns)
    view_ = DnsView(domain, ttl=7, datacenter="dc1")
    extra = {} if resolved is None else {"resolved": resolved}
    reply = view_.respond(query.to_wire(), view, tcp=tcp, shuffle=shuffle, **extra)
    assert reply.wire is not None
    parsed = dns.message.from_wire(reply.wire, one_rr_per_rrset=True)
    assert parsed.id == query.id and parsed.flags & dns.flags.QR
    return reply, parsed


def records(section: list[Any]) -> list[tuple[str, str, str]]:
    """(owner, type, data) of every record in a section, in order."""
    return [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
        for rrset in section
        for rdata in rrset
    ]


def srv(section: list[Any]) -> list[tuple[int, str]]:
    """(port, target) of the SRV records."""
    return [
        (rdata.port, rdata.target.to_text())
        for rrset in section
        if rrset.rdtype == dns.rdatatype.SRV
        for rdata in rrset
    ]


# -- service names -----------------------------------------------------------------------


def test_a_service_answers_each_distinct_address_of_its_healthy_instances() -> None:
    reply, response = ask("goods.service.mesh", "A")
    assert reply.rcode == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert records(response.answer) == [
        ("goods.service.mesh.", "A", HOST_A),  # g1 and g2 share it: once
        ("goods.service.mesh.", "A", HOST_B),
    ]
    assert all(rrset.ttl == 7 for rrset in response.answer)


def test_srv_has_priority_weight_port_and_the_agent_as_target_with_its_address() -> None:
    _, response = ask("goods.service.mesh")
    assert records(response.answer) == [
        ("goods.service.mesh.", "SRV", "1 1 8001 alpha.node.mesh."),
        ("goods.service.mesh.", "SRV", "1 1 8002 alpha.node.mesh."),
        ("goods.service.mesh.", "SRV", "1 1 8003 beta.node.mesh."),
    ]
    # one address record for every SRV record, even when two share their target
    assert records(response.additional) == [
        ("alpha.node.mesh.", "A", HOST_A),
        ("alpha.node.mesh.", "A", HOST_A),
        ("beta.node.mesh.", "A", HOST_B),
    ]


def test_a_tag_filters_and_matches_whatever_its_case() -> None:
    _, response = ask("v1.goods.service.mesh")
    assert srv(response.answer) == [(8001, "alpha.node.mesh."), (8003, "beta.node.mesh.")]
    _, response = ask("blue.goods.service.mesh")
    assert srv(response.answer) == [(8001, "alpha.node.mesh.")]
    reply, _ = ask("v9.goods.service.mesh")
    assert reply.rcode == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    "name",
    ["_goods._tcp.service.mesh", "_goods._tcp.mesh", "_goods._tcp.service.dc1.mesh"],
)
def test_rfc_2782_names_with_tcp_have_no_tag_filter(name: str) -> None:
    _, response = ask(name)
    assert [port for port, _ in srv(response.answer)] == [8001, 8002, 8003]
    assert {rrset.name.to_text() for rrset in response.answer} == {name + "."}


@pytest.mark.parametrize("name", ["_goods._v2.service.mesh", "_goods._v2.mesh"])
def test_rfc_2782_names_with_another_protocol_label_filter_by_that_tag(name: str) -> None:
    _, response = ask(name)
    assert srv(response.answer) == [(8002, "alpha.node.mesh.")]


def test_names_are_matched_whatever_their_case_and_answered_as_asked() -> None:
    _, response = ask("V1.GOODS.Service.MESH")
    assert srv(response.answer) == [(8001, "alpha.node.mesh."), (8003, "beta.node.mesh.")]
    assert response.answer[0].name.to_text() == "V1.GOODS.Service.MESH."
    _, response = ask("ALPHA.node.Mesh", "A")
    assert records(response.answer) == [("ALPHA.node.Mesh.", "A", HOST_A)]


def test_our_datacenter_may_follow_the_kind_and_another_is_unknown() -> None:
    _, response = ask("goods.service.DC1.mesh", "A")
    assert len(response.answer) == 2
    reply, _ = ask("goods.service.dc2.mesh", "A")
    assert reply.rcode == dns.rcode.NXDOMAIN


def test_a_longer_domain_works_and_names_outside_it_are_refused() -> None:
    _, response = ask("goods.service.mesh.example", "A", domain="mesh.example")
    assert len(response.answer) == 2
    reply, response = ask("goods.service.mesh", "A", domain="mesh.example")
    assert reply.rcode == dns.rcode.REFUSED and not response.answer
    assert not response.flags & dns.flags.AA  # not ours to speak for


# -- who is left out ---------------------------------------------------------------------


def test_critical_instances_draining_agents_and_unreachable_agents_are_left_out() -> None:
    gamma = member("gamma", "10.0.0.3", instance("g4", "10.0.0.3", 8004))
    delta = member("delta", "10.0.0.4", instance("g5", "10.0.0.4", 8005), draining=True)
    eps = member("eps", "10.0.0.5", instance("g6", "10.0.0.5", 8006, health="critical"))
    zeta = member("zeta", "10.0.0.6", instance("g7", "10.0.0.6", 8007, health="warning"))
    view = [(gamma, False), (delta, True), (eps, True), (zeta, True)]
    _, response = ask("goods.service.mesh", view=view)
    assert srv(response.answer) == [(8007, "zeta.node.mesh.")]  # warning still counts
    _, response = ask("goods.service.mesh", "A", view=view)
    assert records(response.answer) == [("goods.service.mesh.", "A", "10.0.0.6")]


def test_nothing_healthy_is_nxdomain_with_the_soa() -> None:
    eps = member("eps", "10.0.0.5", instance("g6", "10.0.0.5", 8006, health="critical"))
    for name in ("goods.service.mesh", "nobody.service.mesh"):
        reply, response = ask(name, view=[(eps, True)])
        assert reply.rcode == dns.rcode.NXDOMAIN == response.rcode()
        assert not response.answer
        assert records(response.authority) == [
            ("mesh.", "SOA", "ns.mesh. hostmaster.mesh. 1 3600 600 86400 7")
        ]


@pytest.mark.parametrize(
    "name",
    [
        "service.mesh",
        "node.mesh",
        "a.b.c.service.mesh",
        "goods.nothing.mesh",
        "zzzz.addr.mesh",
        "nobody.node.mesh",
        "_goods.service.mesh",
    ],
)
def test_unknown_names_in_the_domain_are_nxdomain_with_the_soa(name: str) -> None:
    reply, response = ask(name, "A")
    assert reply.rcode == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("goods.service.mesh", "TXT"),
        ("goods.service.mesh", "AAAA"),
        ("alpha.node.mesh", "SRV"),
        ("alpha.node.mesh", "AAAA"),
        ("mesh", "A"),
    ],
)
def test_another_type_for_a_name_that_exists_is_noerror_with_no_answer(
    name: str, rdtype: str
) -> None:
    reply, response = ask(name, rdtype)
    assert reply.rcode == dns.rcode.NOERROR and not response.answer
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_the_apex_answers_its_soa() -> None:
    _, response = ask("mesh", "SOA")
    assert records(response.answer) == [
        ("mesh.", "SOA", "ns.mesh. hostmaster.mesh. 1 3600 600 86400 7")
    ]


# -- node and addr names, SRV targets ------------------------------------------------------


def test_a_node_name_answers_its_advertise_host() -> None:
    _, response = ask("beta.node.mesh", "A")
    assert records(response.answer) == [("beta.node.mesh.", "A", HOST_B)]
    # an unreachable member is still a member: its name resolves
    _, response = ask("beta.node.mesh", "A", view=[(BETA, False)])
    assert records(response.answer) == [("beta.node.mesh.", "A", HOST_B)]


def test_an_addr_name_answers_its_address() -> None:
    assert address_label("10.0.0.1") == "0a000001"
    _, response = ask("0a000001.addr.mesh", "A")
    assert records(response.answer) == [("0a000001.addr.mesh.", "A", "10.0.0.1")]
    label = address_label("fd00::1")
    _, response = ask(f"{label}.addr.mesh", "AAAA")
    assert records(response.answer) == [(f"{label}.addr.mesh.", "AAAA", "fd00::1")]
    reply, response = ask(f"{label}.addr.mesh", "A")
    assert reply.rcode == dns.rcode.NOERROR and not response.answer


def test_the_target_is_an_addr_name_when_the_node_name_would_not_do() -> None:
    other_address = member("alpha", HOST_A, instance("g1", "10.9.9.9", 8001))
    bad_label = member("under_score", HOST_B, instance("g2", HOST_B, 8002))
    twin_1 = member("twin", "10.0.0.7", instance("g3", "10.0.0.7", 8003))
    twin_2 = Member("twin-2", "twin", "10.0.0.8:9010", 1)
    view = [(other_address, True), (bad_label, True), (twin_1, True), (twin_2, True)]
    _, response = ask("goods.service.mesh", view=view)
    assert srv(response.answer) == [
        (8001, "0a090909.addr.mesh."),  # the instance is not at its agent's address
        (8002, "0a000002.addr.mesh."),  # the agent's name is not a DNS label
        (8003, "0a000007.addr.mesh."),  # two members share the name
    ]
    assert records(response.additional) == [
        ("0a090909.addr.mesh.", "A", "10.9.9.9"),
        ("0a000002.addr.mesh.", "A", HOST_B),
        ("0a000007.addr.mesh.", "A", "10.0.0.7"),
    ]
    # and a node name shared by two members answers both addresses
    _, response = ask("twin.node.mesh", "A", view=view)
    assert [data for *_, data in records(response.answer)] == ["10.0.0.7", "10.0.0.8"]


def test_ipv6_instances_answer_aaaa_and_their_srv_carries_an_aaaa() -> None:
    v6 = member("six", "fd00::6", instance("g6", "fd00::6", 8006))
    _, response = ask("goods.service.mesh", "AAAA", view=[(v6, True)])
    assert records(response.answer) == [("goods.service.mesh.", "AAAA", "fd00::6")]
    _, response = ask("goods.service.mesh", view=[(v6, True)])
    assert records(response.additional) == [("six.node.mesh.", "AAAA", "fd00::6")]


def test_a_host_name_address_is_asked_of_the_caller_then_answered() -> None:
    named = member("alpha", HOST_A, instance("g1", "app.local", 8001))
    view = [(named, True)]
    reply, response = ask("goods.service.mesh", view=view)
    assert reply.unresolved == {"app.local"} and not response.answer
    reply, response = ask(
        "goods.service.mesh",
        view=view,
        resolved={"app.local": ["fd00::9", "10.1.2.3"]}.get,
    )
    assert not reply.unresolved
    assert srv(response.answer) == [(8001, "0a010203.addr.mesh.")]  # IPv4 first
    reply, response = ask("goods.service.mesh", "A", view=view, resolved={"app.local": []}.get)
    assert not reply.unresolved and reply.rcode == dns.rcode.NOERROR and not response.answer


def test_answers_come_in_the_order_the_shuffle_leaves_them() -> None:
    orders = set()
    for seed in range(20):
        _, response = ask("goods.service.mesh", shuffle=random.Random(seed).shuffle)
        pairs = srv(response.answer)
        # each SRV keeps its own address record, in the same order
        assert [t for t in (rrset.name.to_text() for rrset in response.additional)] == [
            target for _, target in pairs
        ]
        orders.add(tuple(pairs))
    assert len(orders) > 1


# -- sizes ---------------------------------------------------------------------------------


def many(count: int) -> View:
    """`count` agents with one instance each, at addresses of their own."""
    return [
        (
            member(
                f"node-{i:03d}",
                f"10.1.{i // 250}.{i % 250 + 1}",
                *[instance(f"g{i}", f"10.1.{i // 250}.{i % 250 + 1}", 9000 + i)],
            ),
            True,
        )
        for i in range(count)
    ]


def whole_pairs(response: dns.message.Message) -> None:
    """Every SRV with its own address record, and no address without its SRV."""
    assert [target for _, target in srv(response.answer)] == [
        rrset.name.to_text() for rrset in response.additional if rrset.rdtype != dns.rdatatype.OPT
    ]


def test_udp_without_edns_is_cut_to_512_bytes_whole_pairs_and_tc() -> None:
    reply, response = ask("goods.service.mesh", view=many(40))
    assert reply.wire is not None and len(reply.wire) <= 512
    assert reply.truncated and response.flags & dns.flags.TC
    assert 0 < len(response.answer) < 40
    whole_pairs(response)
    # as many as fit: one pair more would not
    assert len(reply.wire) + 2 * 30 > 512


def test_a_small_answer_is_not_truncated() -> None:
    reply, response = ask("goods.service.mesh", view=many(3))
    assert not reply.truncated and not response.flags & dns.flags.TC
    assert len(response.answer) == 3


def test_a_records_are_cut_to_512_too() -> None:
    reply, response = ask("goods.service.mesh", "A", view=many(100))
    assert reply.wire is not None and len(reply.wire) <= 512 and reply.truncated
    assert 0 < len(response.answer) < 100


def test_udp_with_edns_takes_the_size_the_query_offers() -> None:
    reply, response = ask("goods.service.mesh", view=many(40), edns=4096)
    assert not reply.truncated and len(response.answer) == 40
    assert reply.wire is not None and 512 < len(reply.wire) <= 4096
    assert response.edns == 0  # the answer speaks EDNS back
    reply, response = ask("goods.service.mesh", view=many(200), edns=1232)
    assert reply.wire is not None and 512 < len(reply.wire) <= 1232 and reply.truncated
    whole_pairs(response)
    # less than 512 offered is 512 all the same
    reply, _ = ask("goods.service.mesh", view=many(40), edns=100)
    assert reply.wire is not None and 400 < len(reply.wire) <= 512 and reply.truncated


def test_tcp_answers_up_to_64_kib() -> None:
    reply, response = ask("goods.service.mesh", view=many(200), tcp=True)
    assert not reply.truncated and len(response.answer) == 200
    reply, response = ask("goods.service.mesh", view=many(2000), tcp=True)
    assert reply.wire is not None and 60000 < len(reply.wire) <= 65535
    assert reply.truncated and 200 < len(response.answer) < 2000
    whole_pairs(response)


# -- what is not a question for us ------------------------------------------------------------


def raw_query(questions: int, opcode: int = dns.opcode.QUERY, flags: int = 0) -> bytes:
    header = struct.pack("!HHHHHH", 0x1234, (opcode << 11) | flags, questions, 0, 0, 0)
    question = b"\x05goods\x07service\x04mesh\x00" + struct.pack("!HH", 1, 1)
    return header + question * questions


@pytest.mark.parametrize("questions", [0, 2, 3])
def test_not_exactly_one_question_is_formerr(questions: int) -> None:
    reply = DnsView("mesh").respond(raw_query(questions), VIEW, tcp=False, shuffle=keep_order)
    assert reply.rcode == dns.rcode.FORMERR and reply.wire is not None
    response = dns.message.from_wire(reply.wire)
    assert response.id == 0x1234 and response.rcode() == dns.rcode.FORMERR


def test_another_opcode_is_notimp() -> None:
    reply = DnsView("mesh").respond(
        raw_query(1, opcode=dns.opcode.STATUS), VIEW, tcp=False, shuffle=keep_order
    )
    assert reply.rcode == dns.rcode.NOTIMP


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 5,
        b"garbage that is not a dns message at all",
        raw_query(1)[:-3],  # cut short
        raw_query(1) + b"\x00\x00",  # trailing bytes
        raw_query(1, flags=0x8000),  # a response, not a query
        # a name that points at itself: a compression loop
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
        # two names pointing at each other
        struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0)
        + b"\xc0\x12\x00\x01\x00\x01\xc0\x0c\x00\x01\x00\x01",
        # a label longer than the packet
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x3fabc",
        # a question count far beyond what follows
        struct.pack("!HHHHHH", 1, 0, 65535, 0, 0, 0) + raw_query(1)[12:],
    ],
)
def test_what_is_not_a_query_is_dropped(data: bytes) -> None:
    assert parse_query(data) is None
    assert DnsView("mesh").respond(data, VIEW, tcp=False, shuffle=keep_order).wire is None


def random_or_damaged(rng: random.Random, good: bytes, longest: int, most_hits: int) -> bytes:
    """Half the time random bytes (0..`longest` of them), else `good` with 1..`most_hits`
    bytes overwritten: some of these still parse."""
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, longest))
    damaged = bytearray(good)
    for _ in range(rng.randint(1, most_hits)):
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    return bytes(damaged)


def test_random_bytes_never_raise() -> None:
    rng = random.Random(21)
    view = DnsView("mesh")
    good = raw_query(1)
    for _ in range(3000):
        data = random_or_damaged(rng, good, longest=80, most_hits=4)
        reply = view.respond(data, VIEW, tcp=rng.random() < 0.5, shuffle=rng.shuffle)
        assert reply.wire is None or len(reply.wire) <= 65535


def test_an_oversized_query_is_answered_within_the_limit() -> None:
    # 600 bytes of padding in an OPT option: a big query, a small answer
    query = dns.message.make_query("goods.service.mesh", "SRV", use_edns=0, payload=512)
    query.use_edns(0, 0, 512, options=[dns.edns.GenericOption(65001, b"x" * 600)])
    data = query.to_wire(max_size=65535)
    assert len(data) > 600
    reply = DnsView("mesh").respond(data, VIEW, tcp=False, shuffle=keep_order)
    assert reply.wire is not None and len(reply.wire) <= 512


def test_a_changed_view_is_answered_anew() -> None:
    """Records are kept while the view stays the same; any change of a record (a new
    incarnation), of reachability, of a node's own address or draining shows at once."""
    view_ = DnsView("mesh")
    data = dns.message.make_query("goods.service.mesh", "SRV").to_wire()

    def ports(view: View) -> set[int]:
        reply = view_.respond(data, view, tcp=False, shuffle=keep_order)
        assert reply.wire is not None
        return {port for port, _ in srv(dns.message.from_wire(reply.wire).answer)}

    assert ports(VIEW) == {8001, 8002, 8003}
    assert ports(VIEW) == {8001, 8002, 8003}  # from the cache
    critical = replace(
        BETA, incarnation=2, instances=(instance("g3", HOST_B, 8003, health="critical"),)
    )
    assert ports([(ALPHA, True), (critical, True)]) == {8001, 8002}
    assert ports([(ALPHA, True), (BETA, False)]) == {8001, 8002}
    assert ports([(ALPHA, True), (replace(BETA, draining=True), True)]) == {8001, 8002}
    assert ports(VIEW) == {8001, 8002, 8003}
