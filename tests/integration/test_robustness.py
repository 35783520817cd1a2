"""Bad input from one peer closes that connection only; start-up errors are one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from shared.framing import FrameDecoder, encode_frame
from shared.wire import Error, Hello
from tests.integration.cluster import (
    FakeNode,
    first_message,
    free_port,
    full_mesh,
    holds,
    registered_ids,
    wait_for,
)


def closed_by_server(sock: socket.socket, timeout: float = 30.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.fixture
def pair(make_cluster):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor({"MESH_HANDSHAKE_TIMEOUT": "1"})
    nodes = [cluster.node(n, {"MESH_HANDSHAKE_TIMEOUT": "1"}) for n in ("a", "b")]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))
    return cluster, distributor, nodes, ids


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05hello",  # not JSON
        b"\x00\x00\x00\x02[]",  # not an object
        b"\xff\xff\xff\xff",  # far over the frame cap
        b'\x00\x00\x00\x10{"type":"nope"}\n',  # an unknown type before any hello
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # the wrong protocol
    ],
)
def test_garbage_closes_only_that_connection(pair, garbage):
    _, distributor, nodes, ids = pair
    for port in (distributor.port, nodes[0].port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(garbage)
            assert closed_by_server(sock)
    holds("the mesh is untouched", lambda: full_mesh(nodes) == ids, seconds=1.5)
    assert registered_ids(distributor) == set(ids.values())


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
