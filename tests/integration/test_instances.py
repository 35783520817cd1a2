"""Services in any language: a real Node.js app as the instance, nodes as its agent and as
gateways, on loopback (DESIGN.md, "Services in any language")."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness.ports import free_port
from harness.procs import Proc, http
from harness.waiting import holds, wait_for
from tests.integration.cluster import Cluster, full_mesh

REPO = Path(__file__).resolve().parents[2]
SERVER_JS = REPO / "examples" / "polyglot" / "server.js"
NODE = shutil.which("node")
GATEWAY = {"MESH_CONNECT_TIMEOUT": "1", "MESH_GATEWAY_TIMEOUT": "5"}


class App:
    """One Node.js instance of `hello` on 127.0.0.1."""

    def __init__(self, tmp: Path, name: str) -> None:
        assert NODE is not None, "node (Node.js) is needed: make setup installs it"
        self.name, self.port = name, free_port()
        self.log = tmp / f"app-{name}.log"
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                [NODE, str(SERVER_JS)],
                env={"PORT": str(self.port), "HOST": "127.0.0.1", "INSTANCE_NAME": name},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(f"{name} answers /health", lambda: self.health() == 200)

    def health(self) -> int | None:
        try:
            return http("GET", self.port, "/health")[0]
        except OSError:
            return None

    def fail_health(self, failing: bool = True) -> None:
        path = "/health/fail" if failing else "/health/ok"
        assert http("POST", self.port, path)[0] == 200

    def definition(self, interval: str = "200ms", **extra: Any) -> dict[str, Any]:
        """As py-consul sends one: lowercase keys."""
        return {
            "name": "hello",
            "id": self.name,
            "address": "127.0.0.1",
            "port": self.port,
            "check": {"http": f"http://127.0.0.1:{self.port}/health", "interval": interval},
            **extra,
        }

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[[str], App]]:
    made: list[App] = []

    def make(name: str) -> App:
        made.append(App(tmp_path, name))
        return made[-1]

    yield make
    for app in made:
        app.kill()


def register(agent: Proc, definition: dict[str, Any]) -> tuple[int, Any]:
    """PUT /v1/agent/service/register as Consul's clients do: no Content-Type."""
    raw = orjson.dumps(definition)
    return http("PUT", agent.http_port, "/v1/agent/service/register", raw=raw)


def instances(node: Proc, service: str = "hello") -> dict[str, str]:
    """instance id -> health, as `node` sees them."""
    return {i["id"]: i["health"] for i in node.get(f"/v1/services/{service}")["instances"]}


def gateway_node(cluster: Cluster, name: str, *extra: str) -> tuple[Proc, int]:
    port = free_port()
    node = cluster.node(name, env=GATEWAY, extra=["--gateway-port", str(port), *extra])
    return node, port


def call(port: int, path: str, method: str = "GET", body: bytes | None = None) -> Any:
    """One gateway call: (status, headers, body)."""
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def metrics_text(node: Proc) -> tuple[int, str]:
    conn = HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def instance_of(headers: dict[str, str]) -> str:
    return headers["X-Mesh-Instance"].rpartition("/")[2]


# -- health travels ------------------------------------------------------------------


def test_health_travels_to_every_node_and_turns_critical(make_cluster, apps) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    agent, other = cluster.node("agent"), cluster.node("other")
    wait_for("mesh", lambda: full_mesh([agent, other]))
    app = apps("hello-1")
    code, _ = register(agent, app.definition())
    assert code == 200

    wait_for("passing everywhere", lambda: instances(other) == {"hello-1": "passing"})
    entry = distributor.get("/v1/services/hello")["instances"][0]
    assert entry["health"] == "passing" and entry["node"] == "agent"
    assert distributor.get("/v1/services")["services"]["hello"] == {
        "members": 0,
        "instances": 1,
        "passing": 1,
        "tags": [],
    }

    app.fail_health()
    wait_for("critical on the other node", lambda: instances(other) == {"hello-1": "critical"})
    wait_for(
        "critical at the distributor",
        lambda: distributor.get("/v1/services")["services"]["hello"]["passing"] == 0,
    )
    checks = agent.get("/v1/agent/checks")
    assert [c["Status"] for c in checks.values()] == ["critical"]
    assert "503" in next(iter(checks.values()))["Output"]
    app.fail_health(False)
    wait_for("passing again", lambda: instances(other) == {"hello-1": "passing"})


def test_register_and_deregister_over_http(make_cluster, apps) -> None:
    cluster = make_cluster(steady=True)
    cluster.distributor()
    agent = cluster.node("agent")
    app = apps("hello-1")
    assert register(agent, app.definition(tags=["v1"])) == (200, None)
    services = agent.get("/v1/agent/services")
    assert services["hello-1"]["Service"] == "hello" and services["hello-1"]["Port"] == app.port
    assert services["hello-1"]["Tags"] == ["v1"]

    # the same id again replaces it
    assert register(agent, app.definition(tags=["v2"]))[0] == 200
    assert agent.get("/v1/agent/services")["hello-1"]["Tags"] == ["v2"]
    assert len(agent.get("/v1/agent/checks")) == 1

    assert http("PUT", agent.http_port, "/v1/agent/service/deregister/hello-1")[0] == 200
    assert agent.get("/v1/agent/services") == {} and agent.get("/v1/agent/checks") == {}
    code, doc = http("PUT", agent.http_port, "/v1/agent/service/deregister/hello-1")
    assert code == 404 and "hello-1" in doc["error"]
    wait_for("gone from the record", lambda: instances(agent) == {})


@pytest.mark.parametrize(
    "change, field",
    [
        ({"port": 0}, "Port"),
        ({"name": "not_a_label"}, "Name"),
        ({"check": {"http": "http://127.0.0.1:1/"}}, "Interval"),
        ({"tags": "v1"}, "Tags"),
    ],
)
def test_a_bad_definition_is_a_400_naming_the_field(
    make_cluster, change: dict[str, Any], field: str
) -> None:
    cluster = make_cluster()
    agent = cluster.node("agent", distributor=False)
    base = {"name": "hello", "port": 3000}
    code, doc = register(agent, {**base, **change})
    assert code == 400 and field in doc["error"], doc
    assert agent.get("/v1/agent/services") == {}


def test_a_33rd_instance_is_refused(make_cluster) -> None:
    cluster = make_cluster()
    agent = cluster.node("agent", distributor=False)
    for i in range(32):
        assert register(agent, {"name": "hello", "id": f"h{i}", "port": 3000 + i})[0] == 200
    code, doc = register(agent, {"name": "hello", "id": "h32", "port": 4000})
    assert code == 400 and "at most 32" in doc["error"]
    assert len(agent.get("/v1/agent/services")) == 32
    # replacing one of the 32 is not a 33rd
    assert register(agent, {"name": "hello", "id": "h0", "port": 5000})[0] == 200


BIG_META = {f"k{j}": "v" * 400 for j in range(3)}


@pytest.mark.parametrize(
    "content, why",
    [
        ('{"service": {"name": "hello"}}', "Port"),
        ("{not json", "not JSON"),
        ('{"services": 5}', "services"),
        (
            orjson.dumps(
                {"services": [{"name": "h", "id": f"h{i}", "port": 80} for i in range(33)]}
            ).decode(),
            "at most 32",
        ),
        (
            orjson.dumps(
                {
                    "services": [
                        {"name": "h", "id": f"h{i}", "port": 80, "meta": BIG_META}
                        for i in range(32)
                    ]
                }
            ).decode(),
            "over 32768",
        ),
    ],
)
def test_a_bad_instances_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "instances.json"
    path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "node", "--instances-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"MESH_DISTRIBUTORS": "", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and why in done.stderr, done.stderr


def test_the_agents_death_removes_its_instances(make_cluster, apps, tmp_path: Path) -> None:
    cluster = make_cluster()
    cluster.distributor()
    app = apps("hello-1")
    path = tmp_path / "hello.json"
    path.write_bytes(orjson.dumps({"service": app.definition()}))
    agent = cluster.node("agent", extra=["--instances-file", str(path)])
    other = cluster.node("other")
    wait_for("seen from the other node", lambda: instances(other) == {"hello-1": "passing"})
    agent.kill()
    wait_for("gone with its agent", lambda: instances(other) == {})
    assert app.health() == 200  # the app itself is still up: only its agent went


# -- the gateway -------------------------------------------------------------------


def two_apps_behind_a_gateway(
    make_cluster: Callable[..., Cluster], apps: Callable[[str], App], **check: str
) -> tuple[Proc, int, App, App]:
    """A distributor, an agent with hello-1 and hello-2 registered (`check`: their check's
    settings) and a gateway node that sees both passing: (gateway node, its port, apps)."""
    cluster = make_cluster(steady=True)
    cluster.distributor()
    agent = cluster.node("agent")
    node, port = gateway_node(cluster, "gw")
    one, two = apps("hello-1"), apps("hello-2")
    for app in (one, two):
        assert register(agent, app.definition(**check))[0] == 200
    wait_for(
        "both passing", lambda: instances(node) == {"hello-1": "passing", "hello-2": "passing"}
    )
    return node, port, one, two


def test_the_gateway_spreads_calls_and_skips_a_critical_instance(make_cluster, apps) -> None:
    node, port, one, two = two_apps_behind_a_gateway(make_cluster, apps)

    seen = Counter()
    for _ in range(20):
        code, headers, body = call(port, "/hello/whoami?x=1")
        assert code == 200, body
        doc = orjson.loads(body)
        assert doc["path"] == "/hello/whoami" and doc["query"] == {"x": "1"}
        assert doc["forwarded_for"] == "127.0.0.1"
        assert headers["X-Mesh-Instance"].endswith("/" + doc["instance"])
        seen[doc["instance"]] += 1
    assert seen == {"hello-1": 10, "hello-2": 10}  # one at a time: strict turns

    two.fail_health()
    wait_for("hello-2 critical", lambda: instances(node)["hello-2"] == "critical")
    for _ in range(10):
        code, headers, _ = call(port, "/hello/")
        assert code == 200 and instance_of(headers) == "hello-1"

    one.fail_health()
    wait_for("both critical", lambda: set(instances(node).values()) == {"critical"})
    code, _, body = call(port, "/hello/")
    assert code == 503 and orjson.loads(body)["service"] == "hello"


def test_a_killed_app_costs_no_call_that_was_not_sent(make_cluster, apps) -> None:
    """Calls one after another while one of two apps is SIGKILLed: at most the call in
    flight at that moment fails; every later one connects elsewhere (refused: next one)."""
    # a slow check: the app is dead long before its check says so
    node, port, _, two = two_apps_behind_a_gateway(make_cluster, apps, interval="30s")

    codes = Counter()
    for i in range(200):
        if i == 50:
            two.kill()
        codes[call(port, "/hello/")[0]] += 1
    assert codes[200] >= 199 and set(codes) <= {200, 502}, codes
    assert instances(node)["hello-2"] == "passing"  # the check has not run again yet


def test_an_app_that_closes_mid_response_is_a_502_and_the_next_call_works(
    make_cluster, apps
) -> None:
    cluster = make_cluster()
    agent = cluster.node("agent", distributor=False)
    node, port = gateway_node(cluster, "gw", "--seed", f"127.0.0.1:{agent.port}")
    app = apps("hello-1")
    assert register(agent, app.definition())[0] == 200
    wait_for("passing", lambda: instances(node) == {"hello-1": "passing"})
    code, _, body = call(port, "/hello/close")
    assert code == 502 and orjson.loads(body)["service"] == "hello"
    assert call(port, "/hello/")[0] == 200
    # no response headers within MESH_GATEWAY_TIMEOUT (5 s here): 504, and the next works
    code, _, body = call(port, "/hello/sleep?ms=20000")
    assert code == 504 and orjson.loads(body)["service"] == "hello"
    assert call(port, "/hello/")[0] == 200
    # the gateway counts by service and status code, and times every answer
    code, text = metrics_text(node)
    assert code == 200
    for series in ('code="502",service="hello"', 'code="504",service="hello"'):
        assert f"mesh_gateway_requests_total{{{series}}} 1.0" in text, text
    assert 'mesh_gateway_requests_total{code="200",service="hello"} 2.0' in text
    assert 'mesh_gateway_request_duration_seconds_count{service="hello"} 4.0' in text


def test_streams_and_large_bodies_pass_through_whole(make_cluster, apps) -> None:
    cluster = make_cluster()
    node, port = gateway_node(cluster, "gw")
    app = apps("hello-1")
    assert register(node, app.definition())[0] == 200
    wait_for("passing", lambda: instances(node) == {"hello-1": "passing"})

    # a stream: its first chunk reaches the client long before the stream ends
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    conn.request("GET", "/hello/stream?chunks=4&interval_ms=700")
    resp = conn.getresponse()
    first = resp.readline()
    first_at = time.monotonic() - started
    rest = resp.read()
    ended_at = time.monotonic() - started
    conn.close()
    assert orjson.loads(first)["chunk"] == 0 and rest.count(b"\n") == 3
    assert ended_at - first_at > 1.5  # three more chunks came 0.7 s apart, after the first

    # a 24 MiB download, byte for byte
    size = 24 * 1024 * 1024
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/hello/bytes?n={size}")
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == size
    pattern = bytes(range(251)) * (2 + 65536 // 251)
    received = 0
    while chunk := resp.read(65536):
        offset = received % 251
        assert chunk == pattern[offset : offset + len(chunk)]
        received += len(chunk)
    conn.close()
    assert received == size

    # an upload, streamed to the app and back
    upload = bytes(range(256)) * 4096 * 4  # 4 MiB
    code, _headers, body = call(port, "/hello/echo", "POST", upload)
    assert code == 200 and body == upload


def test_gateway_errors_are_json_never_a_500(make_cluster, apps) -> None:
    cluster = make_cluster()
    _node, port = gateway_node(cluster, "gw", "--service", "goods")
    for path in ("/not_a_label/x", "/-x/", "/" + "a" * 64 + "/"):
        code, _, body = call(port, path)
        assert code == 404 and "error" in orjson.loads(body), (path, body)
    code, _, body = call(port, "/nothing/here")
    assert code == 503 and orjson.loads(body) == {
        "error": "no healthy instance of 'nothing'",
        "service": "nothing",
    }
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/hello/", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    assert conn.getresponse().status == 501
    conn.close()

    # a Python service: POST /<service>/<method> calls an in-process provider
    code, headers, body = call(port, "/goods/echo", "POST", b'{"n": 1}')
    assert code == 200 and orjson.loads(body) == {"n": 1} and "X-Mesh-Member" in headers
    assert call(port, "/goods/ping", "POST")[0] == 200
    assert call(port, "/goods/echo")[0] == 405
    assert call(port, "/goods/nope", "POST")[0] == 502
    assert call(port, "/goods/echo", "POST", b"{bad")[0] == 400


def test_a_slowloris_client_is_cut(make_cluster) -> None:
    cluster = make_cluster()
    node, port = gateway_node(cluster, "gw")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 40:
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(1.0)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "the gateway kept a connection that never finished its headers"
    # the gateway still serves
    assert call(port, "/nothing/")[0] == 503
    assert holds("node healthy", lambda: http("GET", node.http_port, "/healthz")[0] == 200, 1)


def test_a_gateway_port_in_use_is_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "node",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--http-port",
                "0",
                "--gateway-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={"MESH_DISTRIBUTORS": "", "PATH": "/usr/bin:/bin"},
        )
    assert done.returncode == 2 and "gateway" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
