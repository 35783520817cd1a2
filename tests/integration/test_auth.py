"""The mesh secret (every link proves it) and the HTTP bearer token."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from shared.framing import FrameDecoder, encode_frame
from shared.wire import Auth, Error, Hello
from tests.integration.cluster import (
    first_message,
    full_mesh,
    holds,
    http,
    registered_ids,
    status,
    wait_for,
)

SECRET = {"MESH_SECRET": "correct horse battery staple"}


def test_nodes_with_the_secret_mesh_and_a_wrong_secret_is_kept_out(make_cluster, tmp_path):
    cluster = make_cluster(steady=True)
    secret_file = tmp_path / "secret"
    secret_file.write_text("  correct horse battery staple\n")  # surrounding whitespace is stripped
    distributor = cluster.distributor(SECRET)
    a = cluster.node("a", SECRET)
    b = cluster.node("b", {"MESH_SECRET_FILE": str(secret_file)})
    ids = wait_for("a full mesh with the secret", lambda: full_mesh([a, b]))
    intruder = cluster.node("intruder", {"MESH_SECRET": "guess"})
    wait_for(
        "the intruder's attempts fail",
        lambda: status(intruder)["distributors"][0]["attempts"] >= 2,
    )
    assert "auth" in status(intruder)["distributors"][0]["last_error"]  # either side notices
    holds(
        "the intruder never registers",
        lambda: registered_ids(distributor) == set(ids.values()),
        seconds=1.5,
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


def test_the_http_token_guards_everything_but_healthz(make_cluster):
    cluster = make_cluster()
    token = {"MESH_HTTP_TOKEN": "t0ken"}
    distributor = cluster.distributor(token)
    node = cluster.node("a", token)
    for proc, path in ((distributor, "/v1/members"), (node, "/v1/status")):
        assert http("GET", proc.http_port, "/healthz") == (200, {"status": "ok"})
        assert http("GET", proc.http_port, path)[0] == 401
        assert http("GET", proc.http_port, path, headers={"Authorization": "Bearer nope"})[0] == 401
        code, _ = http("GET", proc.http_port, path, headers={"Authorization": "Bearer t0ken"})
        assert code == 200
    assert http("POST", node.http_port, "/v1/request", body={"to": "a", "method": "ping"})[0] == 401


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
