"""The Consul view (shared/consulview.py) and its edge (shared/consulhttp.py): shapes, the
mapping, filters, and an index per answer, so a watcher of one service sleeps through
changes of another."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from shared import consulview as cv
from shared.consulhttp import (
    BadConsulQuery,
    ConsulSource,
    ParkedCount,
    add_consul_routes,
    parse_blocking,
    parse_query,
)
from shared.viewsignal import ViewSignal
from shared.wire import Instance, Member

ID_A = "0123456789abcdef0123456789abcdef"
# member("a", ID_A)'s fields as a Consul node, in a catalog entry as in the node list
NODE_A = {
    "ID": "01234567-89ab-cdef-0123-456789abcdef",
    "Node": "a",
    "Address": "10.0.0.1",
    "Datacenter": "dc1",
    "TaggedAddresses": {"lan": "10.0.0.1", "wan": "10.0.0.1"},
}


def member(
    name: str,
    member_id: str,
    instances: tuple[Instance, ...] = (),
    http: str | None = "10.0.0.1:9101",
    **fields: Any,
) -> Member:
    return Member(member_id, name, "10.0.0.1:9001", 3, http=http, instances=instances, **fields)


def goods(
    instance_id: str, health: str = "passing", tags: tuple[str, ...] = ("v1",), port: int = 1234
) -> Instance:
    return Instance(instance_id, "goods", "127.0.0.1", port, tags, (("ver", "1"),), health)


def view(*members: tuple[Member, bool]) -> cv.View:
    return cv.View(tuple(members), "dc1")


# -- the mapping --------------------------------------------------------------------


def test_a_member_id_is_written_as_a_uuid_and_any_other_id_as_a_stable_one() -> None:
    assert cv.node_uuid(ID_A) == "01234567-89ab-cdef-0123-456789abcdef"
    other = cv.node_uuid("zzzz-ghost")
    assert other == cv.node_uuid("zzzz-ghost") and len(other) == 36 and other.count("-") == 4


def test_every_member_is_a_node_with_a_mesh_service_on_its_http_port() -> None:
    a = member("a", ID_A, tags=("v2",), meta=(("zone", "x"),))
    (entry,) = cv.catalog_service(view((a, True)), "mesh", index=7)
    assert entry == {
        **NODE_A,
        "NodeMeta": {"zone": "x"},
        "ServiceKind": "",
        "ServiceID": "mesh",
        "ServiceName": "mesh",
        "ServiceTags": ["v2"],
        "ServiceAddress": "10.0.0.1",
        "ServiceTaggedAddresses": {},
        "ServiceWeights": {"Passing": 1, "Warning": 1},
        "ServiceMeta": {"zone": "x"},
        "ServicePort": 9101,
        "ServiceEnableTagOverride": False,
        "CreateIndex": 7,
        "ModifyIndex": 7,
    }


def test_a_member_without_an_http_address_has_no_mesh_service_but_is_a_node() -> None:
    old = member("old", "b" * 32, http=None)
    v = view((old, True))
    assert cv.catalog_services(v) == {}
    assert [n["Node"] for n in cv.catalog_nodes(v)] == ["old"]


def test_catalog_services_lists_instances_and_mesh_with_the_union_of_their_tags() -> None:
    a = member("a", ID_A, (goods("g1", tags=("v1",)),), tags=("zone-b",))
    b = member("b", "b" * 32, (goods("g2", tags=("v2", "v1")),))
    services = cv.catalog_services(view((a, True), (b, False)))
    # python in-process services (`services`) are not Consul services: no address
    assert services == {"goods": ["v1", "v2"], "mesh": ["zone-b"]}


def test_python_services_are_not_in_the_consul_view() -> None:
    a = member("a", ID_A, services=("billing",))
    assert "billing" not in cv.catalog_services(view((a, True)))
    assert cv.catalog_service(view((a, True)), "billing") == []


def test_catalog_service_filters_by_every_tag_case_insensitively_and_by_name_too() -> None:
    a = member("a", ID_A, (goods("g1", tags=("v1", "Canary")), goods("g2", tags=("v1",))))
    v = view((a, True))
    ids = [e["ServiceID"] for e in cv.catalog_service(v, "goods", cv.Query(tags=("v1",)))]
    assert ids == ["g1", "g2"]
    both = cv.Query(tags=("v1", "canary"))
    assert [e["ServiceID"] for e in cv.catalog_service(v, "GOODS", both)] == ["g1"]
    assert cv.catalog_service(v, "goods", cv.Query(tags=("v1", "nope"))) == []


def test_node_meta_keeps_the_members_with_every_pair() -> None:
    a = member("a", ID_A, (goods("g1"),), meta=(("zone", "x"), ("rack", "1")))
    b = member("b", "b" * 32, (goods("g2"),), meta=(("zone", "y"),))
    v = view((a, True), (b, True))
    query = cv.Query(node_meta=(("zone", "x"),))
    assert [e["Node"] for e in cv.catalog_service(v, "goods", query)] == ["a"]
    assert [n["Node"] for n in cv.catalog_nodes(v, query)] == ["a"]
    both = cv.Query(node_meta=(("zone", "x"), ("rack", "2")))
    assert cv.catalog_nodes(v, both) == []


def test_entries_are_ordered_by_node_name_whatever_the_view_order() -> None:
    a, b = member("a", "f" * 32, (goods("g1"),)), member("b", "0" * 32, (goods("g2"),))
    assert cv.catalog_service(view((b, True), (a, True)), "goods") == cv.catalog_service(
        view((a, True), (b, True)), "goods"
    )


def test_catalog_nodes_has_consuls_node_fields() -> None:
    (node,) = cv.catalog_nodes(view((member("a", ID_A, meta=(("k", "v"),)), True)), index=3)
    assert node == {
        **NODE_A,
        "Meta": {"k": "v"},
        "CreateIndex": 3,
        "ModifyIndex": 3,
    }


# -- health ----------------------------------------------------------------------------


def checks(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["CheckID"], c["Status"]) for c in entry["Checks"]]


def test_health_has_serf_health_then_the_instances_check() -> None:
    a = member("a", ID_A, (goods("g1", health="warning"),))
    (entry,) = cv.health_service(view((a, True)), "goods")
    assert set(entry) == {"Node", "Service", "Checks"}
    assert checks(entry) == [("serfHealth", "passing"), ("service:g1", "warning")]
    assert entry["Node"]["Node"] == "a" and entry["Node"]["Address"] == "10.0.0.1"
    service = entry["Service"]
    assert (service["ID"], service["Service"], service["Port"]) == ("g1", "goods", 1234)
    assert (service["Address"], service["Tags"], service["Meta"]) == (
        "127.0.0.1",
        ["v1"],
        {"ver": "1"},
    )
    check = entry["Checks"][1]
    assert (check["ServiceID"], check["ServiceName"], check["ServiceTags"]) == (
        "g1",
        "goods",
        ["v1"],
    )
    assert check["Node"] == "a"


def test_an_unreachable_member_is_serf_critical_and_the_mesh_service_has_no_check_of_its_own() -> (
    None
):
    a = member("a", ID_A)
    (entry,) = cv.health_service(view((a, False)), "mesh")
    assert checks(entry) == [("serfHealth", "critical")]


def test_passing_keeps_only_entries_whose_every_check_passes() -> None:
    a = member(
        "a", ID_A, (goods("ok"), goods("bad", health="critical"), goods("meh", health="warning"))
    )
    b = member("b", "b" * 32, (goods("far"),))
    v = view((a, True), (b, False))
    everything = [e["Service"]["ID"] for e in cv.health_service(v, "goods")]
    assert everything == ["ok", "bad", "meh", "far"]
    passing = cv.health_service(v, "goods", cv.Query(passing=True))
    assert [e["Service"]["ID"] for e in passing] == ["ok"]


def test_a_draining_member_is_in_node_maintenance_so_passing_leaves_it_out() -> None:
    a = member("a", ID_A, (goods("g1"),), draining=True)
    (entry,) = cv.health_service(view((a, True)), "goods")
    assert checks(entry) == [
        ("serfHealth", "passing"),
        ("_node_maintenance", "critical"),
        ("service:g1", "passing"),
    ]
    assert cv.health_service(view((a, True)), "goods", cv.Query(passing=True)) == []


def test_agent_self_has_objects_at_the_top_and_our_names() -> None:
    me = cv.Origin("n1", ID_A, "10.0.0.1:9001", "10.0.0.1:9101", "dc7", meta=(("k", "v"),))
    doc = cv.agent_self(me)
    assert all(isinstance(value, dict) for value in doc.values())
    assert doc["Config"]["Datacenter"] == "dc7" and doc["Config"]["NodeName"] == "n1"
    assert doc["Config"]["Version"] and doc["Config"]["Server"] is False
    assert doc["Member"]["Name"] == "n1"
    assert (doc["Member"]["Addr"], doc["Member"]["Port"]) == ("10.0.0.1", 9001)
    assert cv.leader(me) == "10.0.0.1:9101"


# -- an index per answer ---------------------------------------------------------------


def never() -> int:
    raise AssertionError("advance() must not be called")


def test_an_answer_keeps_its_index_until_its_own_digest_changes() -> None:
    indexes = cv.AnswerIndexes()
    assert indexes.index("a", b"1", 5, never) == 5  # first seen: the current index
    assert indexes.index("b", b"x", 5, never) == 5
    assert indexes.index("a", b"1", 9, never) == 5  # b changed at 9, not a
    assert indexes.index("b", b"y", 9, never) == 9
    assert indexes.index("a", b"2", 12, never) == 12


def test_a_change_the_index_did_not_see_moves_the_index_on() -> None:
    indexes = cv.AnswerIndexes()
    clock = [4]

    def advance() -> int:
        clock[0] += 1
        return clock[0]

    assert indexes.index("checks", b"out-1", 4, advance) == 4
    assert indexes.index("checks", b"out-2", 4, advance) == 5  # same index, new answer


def test_a_forgotten_answer_starts_again_at_the_current_index_never_lower() -> None:
    indexes = cv.AnswerIndexes(limit=2)
    assert indexes.index("a", b"1", 3, never) == 3
    indexes.index("b", b"1", 4, never)
    indexes.index("c", b"1", 5, never)  # a is dropped
    assert len(indexes) == 2
    assert indexes.index("a", b"1", 6, never) == 6


# -- the edge's parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [
        ("120000ms", 120.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 300.0),
        ("1m30s", 90.0),
        ("0", 300.0),
    ],
)
def test_wait_is_a_go_duration_cut_to_300_s(wait: str, seconds: float) -> None:
    assert parse_blocking(MultiDict(index="3", wait=wait)).wait == pytest.approx(seconds)


@pytest.mark.parametrize(
    "query",
    [
        {"index": "x"},
        {"index": "-1"},
        {"index": "1.5"},
        {"index": str(2**64)},
        {"wait": "30"},
        {"wait": "-1s"},
        {"wait": "soon"},
    ],
)
def test_a_bad_index_or_wait_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(BadConsulQuery):
        parse_blocking(MultiDict(query))


def test_passing_tags_and_node_meta_are_read_as_consul_reads_them() -> None:
    assert parse_query(MultiDict(passing="")).passing
    assert parse_query(MultiDict(passing="1")).passing
    assert parse_query(MultiDict(passing="true")).passing
    assert not parse_query(MultiDict(passing="false")).passing
    assert not parse_query(MultiDict()).passing
    with pytest.raises(BadConsulQuery):
        parse_query(MultiDict(passing="maybe"))
    query = parse_query(MultiDict([("tag", "a"), ("tag", "b"), ("node-meta", "zone:x:y")]))
    assert query.tags == ("a", "b") and query.node_meta == (("zone", "x:y"),)


# -- the edge, in process -------------------------------------------------------------------


class Fake:
    """A process's view that the test changes, with its signal."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.version = 1
        self.signal = ViewSignal()
        self.parked = ParkedCount(limit=3)

    def put(self, m: Member) -> None:
        self.members[m.id] = m
        self.version += 1
        self.signal.notify()

    def source(self) -> ConsulSource:
        me = cv.Origin("me", ID_A, "127.0.0.1:1", "127.0.0.1:2", "dc1")
        return ConsulSource(
            datacenter="dc1",
            view=lambda: cv.View(tuple((m, True) for m in self.members.values()), "dc1"),
            origin=lambda request: me,
            base_index=lambda: self.version,
            wait=self.signal.wait,
            wake=self.signal.notify,
            hold=self.parked.hold,
        )


def app_with(fake: Fake) -> web.Application:
    app = web.Application()

    async def ours(request: web.Request) -> web.Response:
        return web.json_response({"ours": True})

    app.router.add_get("/v1/status", ours)  # a mesh route in a Consul area's name
    add_consul_routes(app, fake.source())
    return app


async def test_a_watcher_of_one_service_sleeps_through_changes_of_another() -> None:
    fake = Fake()
    fake.put(member("a", ID_A, (goods("g1"),)))
    async with TestClient(TestServer(app_with(fake))) as client:
        first = await client.get("/v1/health/service/goods")
        index = int(first.headers["X-Consul-Index"])
        assert first.headers["X-Consul-KnownLeader"] == "true"
        assert first.headers["X-Consul-LastContact"] == "0"

        async def watch() -> tuple[float, int, Any]:
            started = time.monotonic()
            response = await client.get(f"/v1/health/service/goods?index={index}&wait=1s")
            body = await response.json()
            return time.monotonic() - started, int(response.headers["X-Consul-Index"]), body

        # another service changes: the watcher answers after its wait, same index
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        other = Instance("o1", "other", "127.0.0.1", 1, health="passing")
        fake.put(member("b", "b" * 32, (other,)))
        took, again, _ = await asyncio.wait_for(watcher, 10)
        assert took >= 0.9 and again == index
        assert fake.parked.parked == 0

        # its own service changes: woken at once, with a higher index
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        fake.put(member("a", ID_A, (goods("g1"), goods("g2"))))
        took, newer, body = await asyncio.wait_for(watcher, 10)
        assert took < 0.9 and newer > index and len(body) == 2


async def test_consul_refusals_and_404s_leave_our_own_routes_alone() -> None:
    fake = Fake()
    async with TestClient(TestServer(app_with(fake))) as client:
        for path, status, text in [
            ("/v1/catalog/services?dc=other", 500, "No path to datacenter"),
            ("/v1/catalog/services?dc=DC1", 200, "{}"),
            ("/v1/catalog/services?filter=Service==x", 400, "not supported"),
            ("/v1/catalog/services?index=nope", 400, "Invalid index"),
            ("/v1/catalog/services?index=1&wait=forever", 400, "Invalid wait"),
            ("/v1/health/service/x?passing=maybe", 400, "passing"),
            ("/v1/kv/some/key", 404, "404 page not found"),
            ("/v1/catalog/datacenterz", 404, "404 page not found"),
            ("/v1/catalog/services?stale&consistent&cached&near=_agent&pretty", 200, "{}"),
        ]:
            response = await client.get(path)
            assert (response.status, path) == (status, path)
            assert text in await response.text(), path
            assert int(response.headers["X-Consul-Index"]) >= 1
        assert await (await client.get("/v1/status")).json() == {"ours": True}
        assert await (await client.get("/v1/status/leader")).json() == "127.0.0.1:2"


async def test_parked_queries_are_watchers_and_beyond_the_cap_a_429() -> None:
    fake = Fake()
    async with TestClient(TestServer(app_with(fake))) as client:
        url = f"/v1/catalog/services?index={fake.version}&wait=5s"
        parked = [asyncio.create_task(client.get(url)) for _ in range(3)]
        for _ in range(100):
            if fake.parked.parked == 3:
                break
            await asyncio.sleep(0.02)
        assert fake.parked.parked == 3
        assert (await client.get(url)).status == 429
        fake.put(member("a", ID_A))
        for response in await asyncio.wait_for(asyncio.gather(*parked), 10):
            assert response.status == 200 and int(response.headers["X-Consul-Index"]) > 1
