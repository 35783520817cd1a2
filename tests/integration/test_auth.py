"""The mesh secret (every link proves it) and the HTTP bearer token."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading

from harness.procs import http
from harness.waiting import holds, wait_for
from shared.framing import FrameDecoder, encode_frame
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
