"""DNS bad input on real processes: nothing crashes or stalls them, and after each kind of
abuse the distributor and a node still answer dig, over UDP and TCP."""

from __future__ import annotations

import os
import random
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest

from harness.ports import free_port
from harness.procs import Proc, raise_nofile
from harness.waiting import DEADLINE, wait_for
from shared.dnsserver import MAX_TCP
from tests.integration.cluster import Cluster
from tests.integration.dig import dig
from tests.integration.test_instances import register
from tests.unit.test_dnsview import random_or_damaged

QUIET = 1.0  # seconds to listen for an answer that must not come


@pytest.fixture
def targets(make_cluster: Callable[..., Cluster]) -> Iterator[list[tuple[Proc, int]]]:
    """(process, DNS port) of a distributor and a node, with one instance of goods."""
    cluster = make_cluster(steady=True)
    distributor_dns, node_dns = free_port(), free_port()
    distributor = cluster.distributor(env={"MESH_DNS_PORT": str(distributor_dns)})
    node = cluster.node("n1", extra=["--dns-port", str(node_dns)])
    body = {"name": "goods", "id": "goods-1", "address": "127.0.0.1", "port": 1234}
    assert register(node, body)[0] == 200
    for port in (distributor_dns, node_dns):
        wait_for("goods answered", lambda p=port: dig(p, "goods.service.mesh").data())
    yield [(distributor, distributor_dns), (node, node_dns)]


def still_answers(targets: list[tuple[Proc, int]]) -> None:
    for proc, port in targets:
        assert proc.running(), f"{proc.name} exited"
        for options in ((), ("+tcp",)):
            answer = dig(port, "goods.service.mesh", "A", *options)
            assert answer.status == "NOERROR" and answer.data() == ["127.0.0.1"], answer.text


def query(name: str = "goods.service.mesh", rdtype: str = "A", qid: int = 7) -> bytes:
    message = dns.message.make_query(name, rdtype)
    message.id = qid
    return message.to_wire()


def header(questions: int, qid: int = 7) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, questions, 0, 0, 0)


QUESTION = b"\x05goods\x07service\x04mesh\x00\x00\x01\x00\x01"
# a name that is a pointer to itself, and two names pointing at each other
LOOPS = [
    header(1) + b"\xc0\x0c\x00\x01\x00\x01",
    header(2) + b"\xc0\x12\x00\x01\x00\x01\xc0\x0c\x00\x01\x00\x01",
    header(1) + b"\x05goods\xc0\x12\x00\x01\x00\x01",
]


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(QUIET)
    return sock


def udp_answers(sock: socket.socket) -> list[bytes]:
    """Every datagram that arrives until QUIET seconds pass without one."""
    got = []
    while True:
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            return got


def tcp_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send `data` on a fresh connection, read until the server closes it (or DEADLINE):
    what came back, and whether the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received, True
            except TimeoutError:
                continue
            if not chunk:
                return received, True
            received += chunk
        return received, False


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def test_garbage_datagrams_are_dropped(targets: list[tuple[Proc, int]]) -> None:
    rng = random.Random(53)
    good = query()
    with udp_socket() as sock:
        for _, port in targets:
            for data in (b"", b"hello", b"\x00" * 11, b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 512):
                sock.sendto(data, ("127.0.0.1", port))
            assert udp_answers(sock) == []
            for _ in range(3000):  # random bytes and damaged queries; some may still parse
                data = random_or_damaged(rng, good, longest=700, most_hits=6)
                sock.sendto(data, ("127.0.0.1", port))
            for answer in udp_answers(sock):
                assert len(answer) <= 512  # whatever was answered, within the UDP limit
    still_answers(targets)


def test_truncated_packets_are_dropped_and_close_a_tcp_connection(
    targets: list[tuple[Proc, int]],
) -> None:
    good = query()
    with udp_socket() as sock:
        for _, port in targets:
            for cut in range(len(good)):
                sock.sendto(good[:cut], ("127.0.0.1", port))
            assert udp_answers(sock) == []
    for _, port in targets:
        # a whole frame around a cut message: the connection is closed, nothing answered
        received, closed = tcp_exchange(port, framed(good[:-3]))
        assert received == b"" and closed


def test_oversized_packets(targets: list[tuple[Proc, int]]) -> None:
    with udp_socket() as sock:
        for _, port in targets:
            # a query followed by 60 KB of junk: not a query
            sock.sendto(query() + b"\x00" * 60000, ("127.0.0.1", port))
            assert udp_answers(sock) == []
            # a big but valid query (EDNS padding): answered, within 512 bytes
            big = dns.message.make_query("goods.service.mesh", "A", use_edns=0, payload=512)
            big.use_edns(0, 0, 512, options=[dns.edns.GenericOption(65001, b"x" * 30000)])
            sock.sendto(big.to_wire(max_size=65535), ("127.0.0.1", port))
            (answer,) = udp_answers(sock)
            assert len(answer) <= 512 and dns.message.from_wire(answer).answer
    for _, port in targets:
        # the largest frame TCP can carry, of junk: the connection is closed
        received, closed = tcp_exchange(port, framed(b"\x00" * 65535))
        assert received == b"" and closed
    still_answers(targets)


def test_compression_loops_are_dropped(targets: list[tuple[Proc, int]]) -> None:
    with udp_socket() as sock:
        for _, port in targets:
            for loop in LOOPS:
                sock.sendto(loop, ("127.0.0.1", port))
            assert udp_answers(sock) == []
    for _, port in targets:
        for loop in LOOPS:
            received, closed = tcp_exchange(port, framed(loop))
            assert received == b"" and closed
    still_answers(targets)


@pytest.mark.parametrize("questions", [0, 3])
def test_zero_or_three_questions_are_formerr(
    targets: list[tuple[Proc, int]], questions: int
) -> None:
    data = header(questions, qid=4242) + QUESTION * questions
    with udp_socket() as sock:
        for _, port in targets:
            sock.sendto(data, ("127.0.0.1", port))
            (answer,) = udp_answers(sock)
            response = dns.message.from_wire(answer)
            assert response.id == 4242 and response.rcode() == dns.rcode.FORMERR
    for _, port in targets:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(framed(data))
            (size,) = struct.unpack("!H", recv_exactly(sock, 2))
            response = dns.message.from_wire(recv_exactly(sock, size))
            assert response.id == 4242 and response.rcode() == dns.rcode.FORMERR
    still_answers(targets)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


def test_a_length_prefix_larger_than_what_follows_is_cut_and_blocks_no_one(
    targets: list[tuple[Proc, int]],
) -> None:
    for _, port in targets:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(struct.pack("!H", 500) + query())  # 500 promised, fewer sent
            # meanwhile others are answered
            still_answers(targets)
            sock.settimeout(DEADLINE)
            try:
                assert sock.recv(1) == b""  # then the server gives up on it
            except ConnectionResetError:
                pass


def open_fds(proc: Proc) -> int:
    assert proc.popen is not None
    return len(os.listdir(f"/proc/{proc.popen.pid}/fd"))


def test_a_thousand_silent_tcp_connections_are_bounded_and_cut(
    targets: list[tuple[Proc, int]],
) -> None:
    raise_nofile()
    for proc, port in targets:
        before = open_fds(proc)
        socks = []
        try:
            for _ in range(1000):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            # what the server holds is bounded, whatever the client opened
            wait_for("the server accepted them all", lambda p=proc, b=before: open_fds(p) >= b + 10)
            held = open_fds(proc)
            assert held <= before + MAX_TCP + 16, (before, held)
            # and it still answers, over UDP and over TCP
            still_answers(targets)
            # every one of the thousand is closed by the server, none stays open
            assert closed_by_server(socks) == len(socks)
        finally:
            for sock in socks:
                sock.close()
        assert open_fds(proc) <= before + 16
    still_answers(targets)


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of `socks` the server closed (EOF or reset) within DEADLINE."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    end = time.monotonic() + DEADLINE * 2
    try:
        while closed < len(socks) and time.monotonic() < end:
            for key, _ in selector.select(timeout=1.0):
                sock: Any = key.fileobj
                try:
                    data = sock.recv(1)
                except ConnectionResetError:
                    data = b""
                except BlockingIOError:
                    continue
                assert data == b"", "the server sent something to a client that asked nothing"
                selector.unregister(sock)
                closed += 1
    finally:
        selector.close()
    return closed


def test_a_query_flood_is_answered_and_leaves_the_process_well(
    targets: list[tuple[Proc, int]], tmp_path: Path
) -> None:
    with udp_socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for _, port in targets:
            for i in range(5000):
                sock.sendto(query(qid=i), ("127.0.0.1", port))
            answers = udp_answers(sock)
            # answered as they came (some may be dropped when a buffer was full, none wrong)
            assert answers
            for answer in answers:
                assert dns.message.from_wire(answer).answer
    still_answers(targets)
    for proc, _ in targets:
        # no line a packet in the log
        assert sum('"dns_' in line for line in proc.log_path.read_text().splitlines()) < 10
