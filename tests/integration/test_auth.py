"""The mesh secret (every link proves it), the HTTP bearer token and the cross-origin refusal."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from distributor import http as distributor_http
from distributor.registry import Registry
from distributor.watch import VersionWatch
from harness.waiting import holds, wait_for
from node import config as node_config
from node import http as node_http
from node.app import Node
from shared.framing import FrameDecoder, encode_frame
from shared.http import start_http
from shared.looplag import LoopLag
from shared.wire import Auth, Error, Hello
from tests.integration.cluster import first_message, full_mesh, member_ids, registered_ids, status

SECRET = {"MESH_SECRET": "correct horse battery staple"}


def test_nodes_with_the_secret_mesh_and_a_wrong_secret_is_kept_out(make_cluster, tmp_path):
    cluster = make_cluster(steady=True)
    secret_file = tmp_path / "secret"
    secret_file.write_text("  correct horse battery staple\n")  # surrounding whitespace is stripped
    distributor = cluster.distributor(SECRET)
    a = cluster.node("a", SECRET)
    b = cluster.node("b", {"MESH_SECRET_FILE": str(secret_file)})
    ids = wait_for("a full mesh with the secret", lambda: full_mesh([a, b]))
    # it tries the distributor, and a's peer port directly as a seed
    intruder = cluster.node(
        "intruder", {"MESH_SECRET": "guess", "MESH_SEEDS": f"127.0.0.1:{a.port}"}
    )
    intruder_id = status(intruder)["id"]
    wait_for(
        "the intruder's attempts fail",
        lambda: status(intruder)["distributors"][0]["attempts"] >= 2,
    )
    assert "auth" in status(intruder)["distributors"][0]["last_error"]  # either side notices
    wait_for("a refused the intruder's seed link", lambda: refused_auth(a) >= 1)

    def kept_out() -> bool:
        return (
            registered_ids(distributor) == set(ids.values())
            and intruder_id not in member_ids(a) | member_ids(b)
            and full_mesh([a, b]) == ids
            and not member_ids(intruder)
        )

    holds("the intruder never registers and no node learns of it", kept_out, seconds=3)
    assert refused_auth(distributor) >= 2


def refused_auth(proc) -> int:
    """Handshakes this process refused because the proof did not check out."""
    return sum(
        1
        for line in proc.logs()
        if line.get("event") == "handshake_failed" and "authentication" in line.get("detail", "")
    )


def test_a_wrong_proof_gets_an_auth_failed_error_frame(make_cluster):
    cluster = make_cluster()
    distributor = cluster.distributor(SECRET)
    node = cluster.node("a", SECRET)
    for port in (distributor.port, node.port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            nonce = "ab" * 32
            sock.sendall(encode_frame(Hello(id="x", name="x", address="127.0.0.1:1", nonce=nonce)))
            decoder = FrameDecoder()
            assert isinstance(first_message(sock, decoder), Hello)
            assert isinstance(first_message(sock, decoder), Auth)  # its own proof
            sock.sendall(encode_frame(Auth("0" * 64)))
            message = first_message(sock, decoder)
            assert isinstance(message, Error) and message.code == "auth_failed"


def test_a_secret_given_twice_is_a_start_up_error(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("s")
    done = subprocess.run(
        [sys.executable, "-m", "distributor", "--secret-file", str(secret_file)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "MESH_SECRET": "s"},
        timeout=30,
    )
    assert done.returncode == 2
    assert "not both" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_fake_distributor_that_reflects_the_handshake_gets_nowhere(make_cluster):
    """Without the secret, sending a node its own hello and proof back must not pass."""
    cluster = make_cluster()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reflected: list[str] = []

    def reflect() -> None:
        listener.settimeout(30)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            decoder = FrameDecoder()
            try:
                for _ in range(2):  # its hello, then its proof, each sent straight back
                    message = first_message(conn, decoder)
                    reflected.append(message.TYPE)
                    conn.sendall(encode_frame(message))
                reflected.append(first_message(conn, decoder).TYPE)
            except (OSError, ConnectionError):
                pass

    thread = threading.Thread(target=reflect, daemon=True)
    thread.start()
    node = cluster.node(
        "a", {**SECRET, "MESH_DISTRIBUTORS": f"127.0.0.1:{port}"}, distributor=False
    )
    thread.join(timeout=30)
    listener.close()
    assert reflected[:1] == ["hello"]
    assert "auth" not in reflected[1:2] or reflected[2:3] == ["error"]
    wait_for(
        "the node counts it as a failed attempt",
        lambda: status(node)["distributors"][0]["attempts"] >= 1,
    )
    assert status(node)["distributors"][0]["state"] != "connected"


class RecordingRelay:
    """A TCP relay in front of a port that records what its first client sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dialer_bytes = bytearray()  # client -> target
        self.answer_bytes = bytearray()  # target -> client
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(30)
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        for src, dst, record in (
            (client, upstream, self.dialer_bytes),
            (upstream, client, self.answer_bytes),
        ):
            thread = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        src.settimeout(None)
        try:
            while data := src.recv(65536):
                record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                sock.close()

    def close(self) -> None:
        self.listener.close()


def frames_in(data: bytes) -> list:
    decoder = FrameDecoder()
    decoder.feed(data)
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


def test_a_recorded_handshake_replayed_is_refused(make_cluster):
    """Record every byte an honest node sends when it dials the distributor (through a
    relay), then replay them on a fresh connection: the distributor's nonce is fresh,
    so the recorded proof does not match and the replay never registers."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor(SECRET)
    relay = RecordingRelay(distributor.port)
    try:
        node = cluster.node(
            "a", {**SECRET, "MESH_DISTRIBUTORS": f"127.0.0.1:{relay.port}"}, distributor=False
        )
        node_id = status(node)["id"]
        wait_for("a registers through the relay", lambda: node_id in registered_ids(distributor))
        node.kill()
        wait_for("a is gone", lambda: node_id not in registered_ids(distributor))
    finally:
        relay.close()
    sent, answered = frames_in(bytes(relay.dialer_bytes)), frames_in(bytes(relay.answer_bytes))
    assert [type(m) for m in sent[:2]] == [Hello, Auth]  # the dialer's whole handshake
    assert sent[0].id == node_id
    recorded_nonce = answered[0].nonce
    with socket.create_connection(("127.0.0.1", distributor.port), timeout=10) as sock:
        sock.sendall(bytes(relay.dialer_bytes))  # hello, proof and heartbeats, as recorded
        decoder = FrameDecoder()
        hello = first_message(sock, decoder)
        assert isinstance(hello, Hello) and hello.nonce != recorded_nonce  # a fresh challenge
        assert isinstance(first_message(sock, decoder), Auth)  # its own proof, then ours fails
        message = first_message(sock, decoder)
        assert isinstance(message, Error) and message.code == "auth_failed"
        with contextlib.suppress(ConnectionError):
            while True:  # and then it closes the connection
                first_message(sock, decoder)
    holds(
        "the replayed node never registers",
        lambda: node_id not in registered_ids(distributor),
        seconds=1.5,
    )
    assert distributor.running()


# -- the HTTP token and the cross-origin refusal, on every route of both programs ---------
#
# The table is the applications' own router, built as the programs build them and served
# through the same start_http: a route added later is in it without anyone listing it.

TOKEN = "t0ken"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
OPEN_PATHS = {"/healthz", "/readyz"}  # probes: open with a token set (DESIGN.md, "HTTP")
ANSWER_WITHIN = 10.0  # s: every route answers (headers at least) well within this


@dataclass
class Served:
    program: str
    app: web.Application
    runner: web.AppRunner

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])

    def routes(self) -> list[tuple[str, str]]:
        """(method, path) of every route, a path parameter filled in; `*` as GET and POST."""
        table = set()
        for route in self.app.router.routes():
            if route.method == "HEAD":  # aiohttp's twin of each GET: same handler, same checks
                continue
            path = re.sub(r"\{[^}]*\}", "x", route.resource.canonical)
            methods = ("GET", "POST") if route.method == "*" else (route.method,)
            table.update((method, path) for method in methods)
        return sorted(table)


@contextlib.asynccontextmanager
async def both_apps(token: str | None) -> AsyncIterator[list[Served]]:
    """The distributor's and a node's HTTP API, in this process, as their programs make them."""
    registry = Registry(epoch="e1")
    distributor_app = distributor_http.make_app(registry, VersionWatch())
    node = Node(node_config.parse(["--name", "a"], {"MESH_DISTRIBUTORS": ""}), LoopLag())
    node_app = node_http.make_app(node)
    served: list[Served] = []
    try:
        for program, app in (("distributor", distributor_app), ("node", node_app)):
            runner = await start_http(app, "127.0.0.1", 0, token)
            served.append(Served(program, app, runner))
        yield served
    finally:
        for one in served:
            await one.runner.cleanup()


def fresh_connections() -> aiohttp.TCPConnector:
    # an event stream left unread must not leave its bytes for the next request to read
    return aiohttp.TCPConnector(force_close=True)


async def status_of(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
) -> int:
    """The status only: an event stream's headers are enough, its body is never read."""
    async with asyncio.timeout(ANSWER_WITHIN):
        async with session.request(method, url, headers=headers, allow_redirects=False) as resp:
            return resp.status


async def test_every_route_but_the_probes_needs_the_token() -> None:
    async with (
        both_apps(TOKEN) as served,
        aiohttp.ClientSession(connector=fresh_connections()) as session,
    ):
        for one in served:
            table = one.routes()
            paths = {path for _, path in table}
            assert OPEN_PATHS & paths == (
                {"/healthz", "/readyz"} if one.program == "node" else {"/healthz"}
            )
            assert len(paths - OPEN_PATHS) >= 5, table  # the table is the router, not a stub
            for method, path in table:
                url = f"http://127.0.0.1:{one.port}{path}"
                bare = await status_of(session, method, url)
                wrong = await status_of(session, method, url, {"Authorization": "Bearer nope"})
                right = await status_of(session, method, url, BEARER)
                where = f"{one.program} {method} {path}"
                if path in OPEN_PATHS:
                    assert bare != 401 and wrong != 401, where
                else:
                    assert (bare, wrong) == (401, 401), where
                assert right != 401, where
    assert "/v1/request" in {path for _, path in served[1].routes()}


CROSS_ORIGINS = [
    "http://evil.example",
    "http://127.0.0.1:1",  # another port is another origin
    "https://127.0.0.1:{port}",  # another scheme
    "null",  # a sandboxed frame, a file
    "not a url",
]


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_a_cross_origin_request_is_refused_on_both_programs(token: str | None) -> None:
    headers = BEARER if token else {}
    async with (
        both_apps(token) as served,
        aiohttp.ClientSession(connector=fresh_connections()) as session,
    ):
        for one in served:
            own = f"http://127.0.0.1:{one.port}"
            for method, path in (("GET", "/v1/services"), ("GET", "/healthz")) + (
                (("POST", "/v1/request"), ("PUT", "/v1/self"))
                if one.program == "node"
                else (("POST", "/login"), ("GET", "/v1/members"))
            ):
                url = f"{own}{path}"
                for origin in CROSS_ORIGINS:
                    cross = {**headers, "Origin": origin.format(port=one.port)}
                    assert await status_of(session, method, url, cross) == 403, (url, origin)
                # no Origin (curl, Prometheus), or the page's own: served as before
                for same in ({}, {"Origin": own}, {"Origin": own.upper()}):
                    status = await status_of(session, method, url, {**headers, **same})
                    assert status != 403, (url, same)
