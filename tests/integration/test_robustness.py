"""Bad input from one peer closes that connection only; start-up errors are one line."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

import orjson
import pytest

from harness.hostile import tls_client_hello
from harness.ports import free_port
from harness.waiting import Sampler, holds, wait_for
from shared.framing import FrameDecoder, encode_frame
from shared.wire import Error, Heartbeat, Hello, Member, MemberLeft, Snapshot
from tests.integration.cluster import FakeNode, first_message, full_mesh, member_ids, registered_ids


def closed_by_server(sock: socket.socket, timeout: float = 30.0) -> bool:
    """True once the server closed the connection (an end of stream or a reset), reading and
    dropping whatever it sends until then; False if it is still open after `timeout` s."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:  # reset or aborted: closed all the same
            return True
        except TimeoutError:
            return False
    return False


@pytest.mark.parametrize(
    ("server", "closed"),
    [("closes", True), ("resets", True), ("stays silent", False), ("keeps talking", False)],
)
def test_closed_by_server_tells_a_closed_connection_from_an_open_one(server, closed):
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname(), timeout=10) as sock,
    ):
        conn, _ = listener.accept()
        done = threading.Event()
        talker = threading.Thread(target=talk, args=(conn, done), daemon=True)
        with conn:
            if server == "resets":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if server in ("closes", "resets"):
                conn.close()
            if server == "keeps talking":
                talker.start()
            try:
                assert closed_by_server(sock, timeout=0.5) is closed
            finally:
                done.set()
                if talker.is_alive():
                    talker.join()


def talk(conn: socket.socket, done: threading.Event) -> None:
    """A byte every 0.1 s for up to 2 s: a reader that waits for a quiet moment waits long."""
    end = time.monotonic() + 2
    while not done.wait(0.1) and time.monotonic() < end:
        conn.sendall(b"x")


@pytest.fixture
def pair(make_cluster):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor({"MESH_HANDSHAKE_TIMEOUT": "1"})
    nodes = [cluster.node(n, {"MESH_HANDSHAKE_TIMEOUT": "1"}) for n in ("a", "b")]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    return cluster, distributor, nodes, ids


def raw_frame(obj: object) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


GHOST = Member("zzzz-ghost", "ghost", "127.0.0.1:1", 1)
# name -> (bytes, whether the client then stays silent instead of half-closing)
HOSTILE: dict[str, tuple[bytes, bool]] = {
    "not JSON": (b"\x00\x00\x00\x05hello", False),
    "not an object": (b"\x00\x00\x00\x02[]", False),
    "far over the frame cap": (b"\xff\xff\xff\xff", False),
    "absurd prefix, then data": (b"\x7f\xff\xff\xf0" + b"A" * 4096, False),
    "one byte over the cap": (struct.pack(">I", 1024 * 1024 + 1) + b"{}" * 1000, False),
    "an unknown type first": (raw_frame({"type": "nope"}), False),
    "a hello of the wrong shape": (
        raw_frame({"type": "hello", "version": 1, "min_version": 1, "id": 5, "name": []}),
        False,
    ),
    "a hello with huge numbers": (
        raw_frame({**Hello("x", "x", "127.0.0.1:1").to_dict(), "incarnation": 2**64 - 1}),
        False,
    ),
    "a heartbeat before the hello": (encode_frame(Heartbeat()), False),
    "a snapshot before the hello": (encode_frame(Snapshot("e", 1, (GHOST,))), False),
    "a member_left naming nobody": (encode_frame(MemberLeft(9, GHOST, "leave")), False),
    "JSON nested 300 deep": (raw_frame({"type": "heartbeat"})[:-1] + b',"x":' +
                             b"[" * 300 + b"]" * 300 + b"}", False),
    "an HTTP request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    "64 KiB of zeros": (b"\x00" * 65536, False),
    "a TLS ClientHello": (tls_client_hello(), False),
    "a truncated frame, then silence": (encode_frame(Hello("x", "x", "127.0.0.1:1"))[:-5], True),
    "two bytes of a prefix, then silence": (b"\x00\x00", True),
}  # fmt: skip


def send_hostile(port: int, data: bytes, silent: bool) -> None:
    """Send `data` on a fresh connection and wait until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # the server may close before it has read it all: a reset here is its answer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            if not silent:
                sock.shutdown(socket.SHUT_WR)
        assert closed_by_server(sock)


def test_hostile_payloads_close_only_their_connection(pair):
    """Every payload of the table, to the distributor and to a node: each connection is
    closed, both stay up, and members and links stay exactly as they were throughout."""
    cluster, distributor, nodes, ids = pair
    a, b = nodes

    def untouched() -> str | None:
        if not all(proc.running() for proc in cluster.procs):
            return "a process exited"
        if registered_ids(distributor) != set(ids.values()):
            return f"registered: {registered_ids(distributor)}"
        if member_ids(a) != {ids["b"]} or member_ids(b) != {ids["a"]}:
            return f"members: a {member_ids(a)}, b {member_ids(b)}"
        if full_mesh(nodes) != ids:
            return "a peer link is down"
        return None

    with Sampler("members and links untouched", untouched):
        for name, (data, silent) in HOSTILE.items():
            for proc in (distributor, a):
                try:
                    send_hostile(proc.port, data, silent)
                except (OSError, AssertionError) as exc:
                    raise AssertionError(f"{name} to {proc.name}: {exc!r}") from None
        time.sleep(1.5)  # and a while after the last one
    assert all(proc.running() for proc in cluster.procs)


def test_a_silent_connection_is_closed_after_the_handshake_timeout(pair, record_figure):
    _, distributor, nodes, ids = pair
    for port in (distributor.port, nodes[0].port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            assert closed_by_server(sock)
            record_figure(
                f"loopback: silent connection to port {port} closed (handshake timeout 1 s)",
                time.monotonic() - started,
            )
    assert full_mesh(nodes) == ids


STALLS = 200  # connections held open at once, each with 2 bytes of a length prefix
STALL_TIMEOUT = 2.0  # MESH_HANDSHAKE_TIMEOUT for this test


def test_stalled_connections_are_cut_while_honest_nodes_join(make_cluster, record_figure):
    """200 connections that never finish a frame, to the distributor and to a node, kept at
    200 (each one cut is replaced) while two honest nodes start and join: every one is cut
    after the handshake timeout (not before), and the honest nodes mesh meanwhile."""
    cluster = make_cluster(steady=True)
    env = {"MESH_HANDSHAKE_TIMEOUT": str(STALL_TIMEOUT)}
    distributor = cluster.distributor(env)
    a = cluster.node("a", env)
    selector = selectors.DefaultSelector()
    lifetimes: list[float] = []

    def stall(port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        selector.register(sock, selectors.EVENT_READ, time.monotonic())
        sock.sendall(b"\x00\x00")
        sock.setblocking(False)

    def reap(timeout: float) -> None:
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            try:
                if sock.recv(4096):  # type: ignore[union-attr]
                    continue  # not expected, but only the end counts
            except BlockingIOError:
                continue
            except ConnectionResetError:
                pass
            lifetimes.append(time.monotonic() - key.data)
            selector.unregister(sock)
            sock.close()  # type: ignore[union-attr]

    ports = [distributor.port, a.port]
    for i in range(STALLS):
        stall(ports[i % 2])
    honest = [cluster.node(name, env, wait=False) for name in ("b", "c")]
    everyone = [a, *honest]
    joined_while_stalled = None
    started = time.monotonic()
    try:
        while joined_while_stalled is None:
            assert time.monotonic() - started < 60, "the honest nodes did not join"
            reap(0.2)
            while len(selector.get_map()) < STALLS:  # keep 200 stalled at all times
                stall(ports[len(lifetimes) % 2])
            try:
                ids = full_mesh(everyone)
                if ids and registered_ids(distributor) == set(ids.values()):
                    joined_while_stalled = time.monotonic() - started
            except (OSError, ValueError, KeyError):
                pass  # not up yet
        held = len(selector.get_map())
        deadline = time.monotonic() + 30
        while selector.get_map() and time.monotonic() < deadline:
            reap(0.2)
        assert not selector.get_map(), f"{len(selector.get_map())} stalled connections still open"
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
    assert held == STALLS
    # the handshake timeout cut them: not sooner, and well within the generous deadline
    assert min(lifetimes) >= STALL_TIMEOUT - 0.1, min(lifetimes)
    assert max(lifetimes) < 30, max(lifetimes)
    record_figure(
        f"loopback: {len(lifetimes)} stalled connections (200 at a time) cut, slowest "
        f"(handshake timeout {STALL_TIMEOUT:g} s)",
        max(lifetimes),
    )
    record_figure(
        "loopback: 2 honest nodes joined amid 200 stalled connections", joined_while_stalled
    )
    assert full_mesh(everyone) == ids
    assert all(proc.running() for proc in cluster.procs)


def test_bad_input_after_hello_is_a_protocol_leave(pair):
    _, distributor, nodes, ids = pair
    with FakeNode(distributor.port, address=f"127.0.0.1:{free_port()}") as ghost:
        wait_for("the ghost is registered", lambda: ghost.id in registered_ids(distributor))
        ghost.sock.sendall(b"\x00\x00\x00\x03{{{")
        assert closed_by_server(ghost.sock)
    wait_for("the ghost is gone", lambda: ghost.id not in registered_ids(distributor))
    assert [line["reason"] for line in ghost_departures(distributor)] == ["protocol"]
    assert full_mesh(nodes) == ids


def test_versions_that_do_not_overlap_are_refused_with_an_error_frame(pair):
    _, distributor, nodes, _ = pair
    future = Hello(id="future", name="future", address="127.0.0.1:1", version=9, min_version=7)
    for port in (distributor.port, nodes[0].port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(encode_frame(future))
            message = first_message(sock)
            assert isinstance(message, Error) and message.code == "unsupported_version"
            assert "7..9" in message.message
            assert closed_by_server(sock)


def test_registration_incarnations(pair):
    _, distributor, _, _ = pair
    address = f"127.0.0.1:{free_port()}"
    with FakeNode(distributor.port, address=address) as first:
        # the same id at the same incarnation: an attempt from before a freeze
        with socket.create_connection(("127.0.0.1", distributor.port), timeout=10) as sock:
            sock.sendall(
                encode_frame(Hello(id=first.id, name="ghost", address=address, incarnation=1))
            )
            decoder = FrameDecoder()
            assert isinstance(first_message(sock, decoder), Hello)  # the handshake completes
            message = first_message(sock, decoder)  # and then the registration is refused
            assert isinstance(message, Error) and message.code == "stale_incarnation"
        # a newer incarnation replaces it: the old link is closed, and no leave goes out
        with FakeNode(distributor.port, address=address, incarnation=2):
            assert closed_by_server(first.sock)
            holds(
                "the ghost stays registered",
                lambda: first.id in registered_ids(distributor),
                seconds=1,
            )
            assert not ghost_departures(distributor)
    wait_for("the ghost's last link is gone", lambda: ghost_departures(distributor))
    assert [line["reason"] for line in ghost_departures(distributor)] == ["closed"]


def ghost_departures(distributor) -> list[dict]:
    return [
        line
        for line in distributor.logs()
        if line.get("event") == "member_left" and line.get("member") == "ghost"
    ]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--port", "nope"], {}, "not a port number"),
        (["--bogus"], {}, "unrecognized arguments"),
        ([], {"MESH_HEARTBEAT_INTERVAL": "2", "MESH_HEARTBEAT_TIMEOUT": "3"}, "at least twice"),
        ([], {"MESH_RETRY_MAX": "soon"}, "not a number"),
        (["--distributor", "no-port"], {}, "HOST:PORT"),
    ],
)
def test_start_up_errors_exit_2_with_one_line(args, env, says):
    module = "node" if "--distributor" in args else "distributor"
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr
