"""Services on real processes: records and updates everywhere, requests by service, draining,
a provider killed under load, readiness, and a mesh with nodes of the previous release."""

from __future__ import annotations

import collections
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.procs import http
from harness.waiting import holds, wait_for
from tests.integration.cluster import full_mesh, peer_links, registered_ids, status
from tests.integration.releases import checkout_release, old

HERE = Path(__file__).resolve().parent
COUNTING_NODE = (str(HERE / "counting_node.py"),)


def post(port: int, payload: dict[str, Any]) -> tuple[int, Any, str | None]:
    """POST /v1/request: (status, body, X-Mesh-Member)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/request", data=json.dumps(payload).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("X-Mesh-Member")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("X-Mesh-Member")


def record_of(members: list[dict[str, Any]], member_id: str) -> dict[str, Any] | None:
    return next((m for m in members if m["id"] == member_id), None)


def seen_everywhere(distributor, nodes, member_id: str, **fields: Any) -> bool:
    """The distributor and every other node hold a record of member_id with these fields."""
    views = [distributor.get("/v1/members")["members"]]
    views += [status(n)["members"] for n in nodes if status(n)["id"] != member_id]
    for members in views:
        record = record_of(members, member_id)
        if record is None or any(record[k] != v for k, v in fields.items()):
            return False
    return True


def test_records_and_updates_reach_every_node_and_the_distributor(make_cluster) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    flags = ["--service", "goods", "--tag", "v1", "--meta", "zone-a=x=y"]
    a = cluster.node("a", env={"MESH_SERVICES": "ignored", "MESH_TAGS": "t"}, extra=flags)
    b = cluster.node("b", env={"MESH_SERVICES": "goods,stock"})
    c = cluster.node("c")
    nodes = [a, b, c]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))

    full = {
        "services": ["goods"],
        "tags": ["v1"],
        "meta": {"zone-a": "x=y"},
        "draining": False,
        "http": f"127.0.0.1:{a.http_port}",
    }
    wait_for("a's record everywhere", lambda: seen_everywhere(distributor, nodes, ids["a"], **full))
    assert record_of(distributor.get("/v1/members")["members"], ids["b"])["services"] == [
        "goods",
        "stock",
    ]
    incarnation = status(a)["incarnation"]

    # an invalid update is refused whole: nothing half-applied, nothing announced
    for bad in (
        {"tags": ["ok", "not ok"]},
        {"services": ["goods"], "meta": {"k": 5}},
        {"draining": "yes"},
        {"colour": "red"},
    ):
        code, doc = http("PUT", a.http_port, "/v1/self", bad)
        assert code == 400 and doc["error"], (bad, code, doc)
    assert status(a)["incarnation"] == incarnation

    code, doc = http("PUT", a.http_port, "/v1/self", {"tags": ["v2", "canary"], "draining": True})
    assert code == 200, doc
    assert doc["incarnation"] == incarnation + 1
    assert doc["tags"] == ["v2", "canary"] and doc["services"] == ["goods"]  # kept
    assert doc["draining"] is True and doc["meta"] == {"zone-a": "x=y"}
    wait_for(
        "the update everywhere",
        lambda: seen_everywhere(distributor, nodes, ids["a"], tags=["v2", "canary"], draining=True),
    )
    assert http("GET", a.http_port, "/readyz") == (
        503,
        {"status": "not_ready", "reason": "draining"},
    )
    # the update is an upsert: no link dropped, a's registration kept
    assert full_mesh(nodes) == ids
    assert ids["a"] in registered_ids(distributor)

    # each node's services view, from its own knowledge
    code, doc = http("GET", c.http_port, "/v1/services")
    assert code == 200 and doc["services"]["goods"]["members"] == 2
    assert doc["services"]["stock"] == {"members": 1, "instances": 0, "passing": 0, "tags": []}
    code, doc = http("GET", a.http_port, "/v1/services/goods")
    states = {m["name"]: m["state"] for m in doc["members"]}
    assert states == {"a": "self", "b": "connected"}
    assert http("GET", a.http_port, "/v1/services/nobody") == (
        200,
        {"service": "nobody", "members": [], "instances": []},
    )

    # back in rotation, and a distributor restart in between keeps the newest record
    http("PUT", a.http_port, "/v1/self", {"draining": False, "services": ["goods", "extra"]})
    distributor.kill()
    distributor = cluster.distributor()
    wait_for(
        "the newest record after a distributor restart",
        lambda: seen_everywhere(
            distributor, nodes, ids["a"], services=["goods", "extra"], draining=False
        ),
    )
    assert http("GET", a.http_port, "/readyz") == (200, {"status": "ready"})


@pytest.fixture
def goods_mesh(make_cluster):
    """A distributor, three providers of goods and a client node that provides nothing."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    providers = [cluster.node(f"p{i}", extra=["--service", "goods"]) for i in range(3)]
    client = cluster.node("client")
    ids = wait_for("a full mesh", lambda: full_mesh([*providers, client]))
    wait_for(
        "the client sees three providers",
        lambda: len(http("GET", client.http_port, "/v1/services/goods")[1]["members"]) == 3,
    )
    return cluster, distributor, providers, client, ids


def test_requests_by_service_spread_and_avoid_a_draining_provider(goods_mesh) -> None:
    _, _, providers, client, ids = goods_mesh
    answered = collections.Counter()
    for i in range(30):
        code, body, member = post(
            client.http_port, {"service": "goods", "method": "echo", "body": i}
        )
        assert (code, body) == (200, i)
        answered[member] += 1
    provider_ids = {ids[p.name] for p in providers}
    assert set(answered) == provider_ids  # every provider, and only providers
    assert max(answered.values()) - min(answered.values()) <= 2  # round-robin when idle

    drained = providers[0]
    code, _ = http("PUT", drained.http_port, "/v1/self", {"draining": True})
    assert code == 200
    wait_for(
        "the client sees the drain",
        lambda: any(
            m["draining"]
            for m in http("GET", client.http_port, "/v1/services/goods")[1]["members"]
            if m["name"] == drained.name
        ),
    )

    def no_request_reaches_the_drained_one() -> bool:
        code, _, member = post(client.http_port, {"service": "goods", "method": "ping"})
        return code == 200 and member in provider_ids - {ids[drained.name]}

    holds("routed requests avoid the draining provider", no_request_reaches_the_drained_one, 3)
    # a request by member still reaches it
    assert post(client.http_port, {"to": drained.name, "method": "ping"})[:2] == (200, {})
    code, body, member = post(client.http_port, {"service": "nobody", "method": "ping"})
    assert (code, body["service"], member) == (503, "nobody", None)


def test_a_provider_killed_under_load_no_request_runs_twice(
    make_cluster, tmp_path, record_figure
) -> None:
    cluster = make_cluster(steady=True)
    cluster.distributor()
    providers = []
    for i in range(3):
        env = {"COUNT_FILE": str(tmp_path / f"p{i}.count")}
        providers.append(cluster.node(f"p{i}", env=env, program=COUNTING_NODE))
    client = cluster.node("client")
    ids = wait_for("a full mesh", lambda: full_mesh([*providers, client]))
    names = {v: k for k, v in ids.items()}
    wait_for(
        "three providers",
        lambda: len(http("GET", client.http_port, "/v1/services/goods")[1]["members"]) == 3,
    )

    results: dict[int, tuple[int, Any, str | None]] = {}
    lock = threading.Lock()
    counter = iter(range(10**6))

    def load(stop: threading.Event) -> None:
        while not stop.is_set():
            with lock:
                n = next(counter)
            payload = {"service": "goods", "method": "take", "body": {"n": n, "hold": 0.05}}
            results[n] = post(client.http_port, {**payload, "timeout": 10})

    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(stop,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_for("load flowing", lambda: len(results) > 60)
        providers[1].popen.send_signal(signal.SIGKILL)
        killed_at = len(results)
        wait_for("load after the kill", lambda: len(results) > killed_at + 150)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    outcomes = collections.Counter(code for code, _, _ in results.values())
    record_figure(f"provider killed under load: outcomes {dict(outcomes)}", len(results), "calls")
    assert set(outcomes) <= {200, 502, 503, 504}, outcomes  # clear statuses only
    assert outcomes[200] >= len(results) - 20, outcomes  # only those caught by the kill failed
    ran: collections.Counter[int] = collections.Counter()
    ran_by: dict[int, str] = {}
    for i, provider in enumerate(providers):
        for line in (tmp_path / f"p{i}.count").read_text().split():
            ran[int(line)] += 1
            ran_by[int(line)] = provider.name
    assert not [n for n, times in ran.items() if times > 1], "a request ran twice"
    for n, (code, body, member) in results.items():
        if code == 200:  # answered by the handler that wrote it down, named in the header
            assert body == {"n": n, "by": names[member]} and ran_by[n] == names[member]
        else:
            assert member in ids.values() and body["error"]
    survivors = {ids["p0"], ids["p2"]}
    last = [results[n] for n in sorted(results)[-50:]]
    assert all(code == 200 and member in survivors for code, _, member in last)


def test_sigterm_drains_then_leaves(make_cluster) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    leaver = cluster.node("leaver", env={"MESH_DRAIN_SECONDS": "2"}, extra=["--service", "goods"])
    stayer = cluster.node("stayer")
    ids = wait_for("a full mesh", lambda: full_mesh([leaver, stayer]))
    started = time.monotonic()
    leaver.signal(signal.SIGTERM)
    wait_for(
        "the distributor sees it draining",
        lambda: record_of(distributor.get("/v1/members")["members"], ids["leaver"])["draining"],
    )
    assert http("GET", leaver.http_port, "/readyz")[0] == 503
    assert ids["leaver"] in registered_ids(distributor)  # draining: still a member
    assert leaver.popen.wait(timeout=30) == 0
    took = time.monotonic() - started
    assert took >= 2, took  # it drained first
    wait_for("it left", lambda: ids["leaver"] not in registered_ids(distributor))
    assert ids["leaver"] not in {m["id"] for m in status(stayer)["members"]}


def test_readiness(make_cluster) -> None:
    cluster = make_cluster(steady=True)
    waiting = cluster.node("waiting")  # its distributor is not up yet
    code, doc = http("GET", waiting.http_port, "/readyz")
    assert (code, doc["status"]) == (503, "not_ready") and "distributor" in doc["reason"]
    cluster.distributor()
    wait_for("ready once registered", lambda: http("GET", waiting.http_port, "/readyz")[0] == 200)
    alone = cluster.node("alone", env={"MESH_DISTRIBUTORS": ""}, distributor=False)
    assert http("GET", alone.http_port, "/readyz") == (200, {"status": "ready"})


# -- a rolling upgrade: nodes and a distributor of the previous release ----------------

PREVIOUS_RELEASE = "5af014d"  # the last commit that spoke protocol version 1 only


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's code, from git."""
    return checkout_release(PREVIOUS_RELEASE, tmp_path_factory.mktemp("previous"))


def test_previous_release_nodes_mesh_with_new_ones(make_cluster, previous_release) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    new_a = cluster.node("new-a", extra=["--service", "goods"])
    new_b = cluster.node("new-b")
    old_node = cluster.node("old", program=old(previous_release, "node"))
    nodes = [new_a, new_b, old_node]
    ids = wait_for("old and new in one mesh", lambda: full_mesh(nodes))
    assert "services" not in status(old_node)["members"][0]  # it is the old program

    # requests both ways, and by service from the old node's peers
    assert post(old_node.http_port, {"to": "new-a", "method": "echo", "body": 1})[:2] == (200, 1)
    assert post(new_b.http_port, {"to": "old", "method": "echo", "body": 2})[:2] == (200, 2)
    assert post(new_b.http_port, {"service": "goods", "method": "ping"})[2] == ids["new-a"]

    # an update: the old node ignores the new fields and the new message, and stays linked
    links = {n.name: peer_links(n) for n in nodes}
    assert http("PUT", new_a.http_port, "/v1/self", {"tags": ["v2"]})[0] == 200
    wait_for(
        "new-b and the distributor see the update",
        lambda: seen_everywhere(distributor, [new_a, new_b], ids["new-a"], tags=["v2"]),
    )
    holds("no link replaced", lambda: {n.name: peer_links(n) for n in nodes} == links, 2)
    assert post(old_node.http_port, {"to": "new-a", "method": "echo", "body": 3})[:2] == (200, 3)
    for node in nodes:  # nobody saw a protocol error over it
        assert not [line for line in node.logs() if line.get("reason") == "protocol"], node.name


def test_new_nodes_register_with_a_previous_release_distributor(
    make_cluster, previous_release
) -> None:
    cluster = make_cluster(steady=True)
    old_distributor = cluster.distributor(program=old(previous_release, "distributor"))
    a = cluster.node("a", extra=["--service", "goods"])
    b = cluster.node("b")
    ids = wait_for("a mesh through an old distributor", lambda: full_mesh([a, b]))
    assert registered_ids(old_distributor) == set(ids.values())
    # the old registry keeps only what it knows; the services travel between the nodes
    assert post(b.http_port, {"service": "goods", "method": "ping"})[2] == ids["a"]
    assert http("PUT", a.http_port, "/v1/self", {"draining": True})[0] == 200
    wait_for(
        "b sees the drain from a itself",
        lambda: record_of(status(b)["members"], ids["a"])["draining"],
    )
    assert post(b.http_port, {"service": "goods", "method": "ping"})[0] == 503
    assert full_mesh([a, b]) == ids


def test_a_busy_callee_answers_429_and_a_routed_request_goes_elsewhere(
    make_cluster, tmp_path
) -> None:
    """The callee's in-flight limit: `to` gets 429 (no handler ran); by service, the next
    provider takes it, and still no request runs twice."""
    cluster = make_cluster(steady=True)
    cluster.distributor()
    busy_env = {"COUNT_FILE": str(tmp_path / "busy.count"), "MESH_MAX_INFLIGHT": "1"}
    busy = cluster.node("busy", env=busy_env, program=COUNTING_NODE)
    free = cluster.node(
        "free", env={"COUNT_FILE": str(tmp_path / "free.count")}, program=COUNTING_NODE
    )
    client = cluster.node("client")
    ids = wait_for("a full mesh", lambda: full_mesh([busy, free, client]))
    wait_for(
        "two providers",
        lambda: len(http("GET", client.http_port, "/v1/services/goods")[1]["members"]) == 2,
    )

    def take(n: int, **target: str) -> tuple[int, Any, str | None]:
        body = {"n": n, "hold": 1.0}
        return post(client.http_port, {**target, "method": "take", "body": body})

    answers: dict[int, tuple[int, Any, str | None]] = {}
    threads = [
        threading.Thread(target=lambda n=n: answers.__setitem__(n, take(n, to="busy")))
        for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(code for code, _, _ in answers.values())
    assert codes == [200, 429, 429], answers
    assert all(member == ids["busy"] for _, _, member in answers.values())

    routed = {}
    threads = [
        threading.Thread(target=lambda n=n: routed.__setitem__(n, take(n, service="goods")))
        for n in range(100, 106)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by = collections.Counter(member for _, _, member in routed.values())
    # the free provider takes whatever the busy one refuses: every routed request succeeds
    assert {code for code, _, _ in routed.values()} == {200}, routed
    assert by[ids["busy"]] <= 1 and by[ids["free"]] >= 5, by
    ran = (tmp_path / "busy.count").read_text().split() + (
        tmp_path / "free.count"
    ).read_text().split()
    assert len(ran) == len(set(ran)), "a request ran twice"
    assert {str(n) for n, (code, _, _) in routed.items() if code == 200} <= set(ran)


def ran_here(count_file: Path) -> list[str]:
    """The request numbers a counting node's handler has started, in order."""
    return count_file.read_text().split() if count_file.exists() else []


def held(port: int, n: int, **target: str) -> threading.Thread:
    """Start a request that holds its handler for a while, in a thread that the test joins."""
    payload = {**target, "method": "take", "body": {"n": n, "hold": 6.0}, "timeout": 30}
    thread = threading.Thread(target=post, args=(port, payload))
    thread.start()
    return thread


def test_a_caller_over_its_own_max_inflight_gets_429(make_cluster, tmp_path) -> None:
    """The caller's own limit on the link: 429 before anything is sent."""
    cluster = make_cluster(steady=True)
    cluster.distributor()
    count = tmp_path / "shop.count"
    shop = cluster.node("shop", env={"COUNT_FILE": str(count)}, program=COUNTING_NODE)
    client = cluster.node("client", env={"MESH_MAX_INFLIGHT": "1"})
    ids = wait_for("a full mesh", lambda: full_mesh([shop, client]))
    holding = held(client.http_port, 1, to="shop")
    try:
        wait_for("the first request is in the handler", lambda: ran_here(count) == ["1"])
        code, body, member = post(client.http_port, {"to": "shop", "method": "ping"})
        assert (code, member) == (429, ids["shop"]), body
        assert "in flight" in body["error"], body
    finally:
        holding.join()
    assert ran_here(count) == ["1"]


def test_a_request_by_service_when_every_provider_is_busy_gets_429(make_cluster, tmp_path) -> None:
    """Each provider refuses as busy (its MESH_MAX_INFLIGHT is reached): the caller tries
    them all and answers 429, not 502 (no handler ran) nor 503 (they are connected)."""
    cluster = make_cluster(steady=True)
    cluster.distributor()
    counts = {name: tmp_path / f"{name}.count" for name in ("a", "b")}
    providers = [
        cluster.node(
            name, env={"COUNT_FILE": str(count), "MESH_MAX_INFLIGHT": "1"}, program=COUNTING_NODE
        )
        for name, count in counts.items()
    ]
    client = cluster.node("client")
    ids = wait_for("a full mesh", lambda: full_mesh([*providers, client]))
    wait_for(
        "two providers",
        lambda: len(http("GET", client.http_port, "/v1/services/goods")[1]["members"]) == 2,
    )

    def started() -> list[str]:
        return sorted(n for count in counts.values() for n in ran_here(count))

    holding = [held(client.http_port, 1, service="goods")]
    try:
        wait_for("one provider holds the first request", lambda: started() == ["1"])
        holding.append(held(client.http_port, 2, service="goods"))  # the idle one takes it
        wait_for("each provider holds one", lambda: started() == ["1", "2"])
        code, body, member = post(client.http_port, {"service": "goods", "method": "ping"})
        assert code == 429, (code, body)
        assert "busy" in body["error"] and member in {ids["a"], ids["b"]}, (body, member)
    finally:
        for thread in holding:
            thread.join()
    assert started() == ["1", "2"]  # the refused request ran nowhere
