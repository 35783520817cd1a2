"""POST /v1/request between real nodes, and every status code it promises."""

from __future__ import annotations

import contextlib
import signal
from http.client import HTTPConnection
from pathlib import Path

import orjson
import pytest

from harness.ports import free_port
from harness.procs import http
from harness.waiting import wait_for
from tests.integration.cluster import FakeNode, full_mesh, status

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def trio(make_cluster):
    cluster = make_cluster(steady=True)
    cluster.distributor()
    nodes = [cluster.node(name) for name in ("a", "b", "c")]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    return cluster, nodes, ids


def request(node, payload=None, raw=None):
    return http("POST", node.http_port, "/v1/request", body=payload, raw=raw)


def test_echo_and_ping_between_nodes(trio):
    _, (a, b, _c), ids = trio
    body = {"x": [1, "two", None], "nested": {"ok": True}}
    assert request(a, {"to": "b", "method": "echo", "body": body}) == (200, body)
    assert request(b, {"to": ids["a"], "method": "ping"}) == (200, {})
    assert request(a, {"to": "a", "method": "echo", "body": [1, 2]}) == (200, [1, 2])  # itself
    assert request(a, {"to": "c", "method": "echo", "body": "text"}) == (200, "text")


def test_request_errors(trio):
    cluster, (a, b, c), ids = trio
    assert request(a, raw=b"{nope")[0] == 400
    assert request(a, [1, 2])[0] == 400
    assert request(a, {"method": "echo"})[0] == 400
    assert request(a, {"to": "b", "method": "echo", "timeout": 0})[0] == 400
    assert request(a, {"to": "b", "method": "echo", "timeout": 301})[0] == 400
    assert request(a, {"to": "nobody", "method": "echo"})[0] == 404
    code, doc = request(a, {"to": "b", "method": "no-such-method"})
    assert code == 502 and "unknown method" in doc["error"]
    code, doc = request(a, {"to": "b", "method": "m" * 200})
    assert code == 400 and "method" in doc["error"]
    big = "x" * (1024 * 1024 + 10)
    assert request(a, {"to": "b", "method": "echo", "body": big})[0] == 413

    assert full_mesh([a, b, c]) == ids  # none of that disturbed a link
    twin = cluster.node("b")  # a second member named b
    wait_for(
        "a knows the twin", lambda: len([m for m in status(a)["members"] if m["name"] == "b"]) == 2
    )
    code, doc = request(a, {"to": "b", "method": "ping"})
    assert code == 409 and ids["b"] in doc["ids"] and len(doc["ids"]) == 2
    twin.kill()

    c.signal(signal.SIGSTOP)  # frozen: the link is still 'connected' for the heartbeat timeout
    try:
        code, doc = request(a, {"to": "c", "method": "ping", "timeout": 0.5})
        assert code == 504, doc
    finally:
        c.signal(signal.SIGCONT)


def test_unreachable_member_fails_fast_with_503(make_cluster):
    cluster = make_cluster()
    cluster.distributor()
    a = cluster.node("a")
    # registered and heartbeating, but nothing listens at its advertised address
    with FakeNode(cluster.distributor_port, address=f"127.0.0.1:{free_port()}") as ghost:
        wait_for(
            "a tries to reach the ghost and fails",
            lambda: any(
                p["id"] == ghost.id and p["state"] == "retrying" and p["attempts"] >= 1
                for p in status(a)["peers"]
            ),
        )
        code, doc = request(a, {"to": "ghost", "method": "ping"})
        assert code == 503, doc
        assert doc["state"] in ("connecting", "retrying")


def test_a_service_built_on_the_handler_api(make_cluster):
    """examples/greeter.py, as the README shows it: a node with a handler of its own."""
    cluster = make_cluster(steady=True)
    cluster.distributor()
    plain = cluster.node("plain")
    greeter = cluster.node("greeter", program=(str(EXAMPLES / "greeter.py"),))
    wait_for("a full mesh", lambda: full_mesh([plain, greeter]))
    code, doc = request(plain, {"to": "greeter", "method": "greet", "body": {"x": 1}})
    assert (code, doc) == (200, {"hello": "plain", "you_sent": {"x": 1}})
    assert request(greeter, {"to": "plain", "method": "greet"})[0] == 502  # plain lacks it
    assert request(greeter, {"to": "plain", "method": "echo", "body": 7}) == (200, 7)


def post_chunked(port: int, chunks: list[bytes]) -> int:
    """POST /v1/request with no Content-Length (chunked): the server learns the size late."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request("POST", "/v1/request", body=iter(chunks), encode_chunked=True)
        return conn.getresponse().status
    finally:
        conn.close()


def test_hostile_request_bodies_get_4xx_never_500(make_cluster):
    """Bad JSON, the wrong shape, nesting past what a frame can carry and oversized bodies
    (with and without a Content-Length): each gets its 4xx, and the links never notice."""
    cluster = make_cluster(steady=True)
    cluster.distributor()
    a, b = cluster.node("a"), cluster.node("b")
    ids = wait_for("a full mesh", lambda: full_mesh([a, b]))

    def deep(depth: int) -> bytes:
        return b'{"to": "b", "method": "echo", "body": ' + b"[" * depth + b"]" * depth + b"}"

    cases = {
        b"": 400,
        b"{nope": 400,
        b"\xff\xfe{}": 400,
        b"null": 400,
        b'"to"': 400,
        b'{"to": "b", "method": "echo"} trailing': 400,
        b'{"to": "b", "method": "echo", "timeout": 1e999}': 400,
        b'{"to": "b", "method": "echo", "body": NaN}': 400,
        b'{"to": ["b"], "method": "echo"}': 400,
        b'{"to": "b", "method": 12}': 400,
        deep(300): 400,  # readable, but deeper than a frame can be written: was a 500
        deep(253): 200,  # the deepest body a request frame carries, echoed back whole
        deep(5000): 400,  # deeper than orjson reads at all
        b'{"to": "b", "method": "echo", "body": "' + b"x" * (1024 * 1024) + b'"}': 413,
    }
    for raw, expected in cases.items():
        code, doc = request(a, raw=raw)
        assert code == expected, (raw[:60], code, doc)
        if expected == 200:
            assert doc == orjson.loads(raw)["body"]
    big = [b'{"to": "b", "method": "echo", "body": "'] + [b"x" * 65536] * 17 + [b'"}']
    assert post_chunked(a.http_port, big) == 413
    small = [b'{"to": "b", ', b'"method": "echo", ', b'"body": [1, 2]}']
    assert post_chunked(a.http_port, small) == 200
    assert full_mesh([a, b]) == ids  # none of that disturbed a link
