"""The DNS part of `make fuzz` (bench/fuzz.py): random and mutated DNS packets at the
programs' DNS ports, over UDP and over TCP.

Packets: valid queries for names of every form (ours and others', every type), the same
damaged (bytes flipped, inserted, cut; counts that lie), random bytes, compression loops,
0 or 3 questions, other opcodes, responses, huge EDNS options. Most go over UDP; some over
TCP connections of a few framed packets each, some with a length prefix larger than what
follows (the server must cut those after its idle time). Afterwards every port must still
answer a plain query over UDP and over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype

TCP_SHARE = 0.05  # of packets: sent in a TCP connection (a few each)
STALL_SHARE = 0.05  # of TCP connections: a prefix larger than what follows, then silence
BATCH = 100  # UDP packets sent before the fuzzer yields to read answers
CLOSE_WAIT = 30.0  # seconds a server gets to close a TCP connection (its idle cut is 5 s)
NAMES = [
    "goods.service.mesh",
    "v1.goods.service.mesh",
    "_goods._tcp.service.mesh",
    "_goods._tcp.mesh",
    "n0.node.mesh",
    "N1.NODE.MESH",
    "7f000001.addr.mesh",
    "zzzz.addr.mesh",
    "mesh",
    "service.mesh",
    "a.b.c.d.e.service.mesh",
    "example.com",
    "goods.service.dc9.mesh",
    ".".join(["x" * 63] * 3) + ".mesh",
]
TYPES = ["A", "AAAA", "SRV", "TXT", "ANY", "SOA", "NS", "PTR", "MX", "CNAME", "AXFR"]


def header(questions: int, flags: int = 0x0100, qid: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, questions, 0, 0, 0)


LOOPS = [
    header(1) + b"\xc0\x0c\x00\x01\x00\x01",
    header(2) + b"\xc0\x12\x00\x01\x00\x01\xc0\x0c\x00\x01\x00\x01",
    header(1) + b"\x05goods\xc0\x12\x00\x01\x00\x01",
]


class DnsForge:
    """DNS packets, valid and hostile, from one seeded random source."""

    def __init__(self, rng: random.Random, pool: int = 2000) -> None:
        self.rng = rng
        # made once: dnspython takes a few hundred microseconds a message, the servers far
        # less to answer one, and the fuzzer is to measure them, not itself
        self._valid = [self._make_valid() for _ in range(pool)]
        self._hostile = [self._make_hostile() for _ in range(pool)]

    def valid(self) -> bytes:
        """A valid query from the pool, with an id of its own."""
        data = self.rng.choice(self._valid)
        return struct.pack("!H", self.rng.randrange(65536)) + data[2:]

    def hostile(self) -> bytes:
        """A hostile packet from the pool, damaged once more now and then."""
        data = self.rng.choice(self._hostile)
        if data and self.rng.random() < 0.3:
            damaged = bytearray(data)
            damaged[self.rng.randrange(len(damaged))] = self.rng.randrange(256)
            return bytes(damaged)
        return data

    def _make_valid(self) -> bytes:
        rng = self.rng
        name = rng.choice(NAMES)
        if rng.random() < 0.3:  # any mix of case
            name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        if rng.random() < 0.3:
            query = dns.message.make_query(
                name, rng.choice(TYPES), use_edns=0, payload=rng.choice([0, 512, 1232, 65535])
            )
        else:
            query = dns.message.make_query(name, rng.choice(TYPES))
        query.id = rng.randrange(65536)
        return query.to_wire()

    def _make_hostile(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:  # a valid one, damaged
            data = bytearray(self._make_valid())
            how = rng.randrange(4)
            if how == 0:
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            elif how == 1:
                at = rng.randrange(len(data))
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            elif how == 2:
                del data[rng.randrange(len(data)) :]
            else:  # counts that lie
                data[4:12] = struct.pack("!HHHH", *(rng.choice([0, 1, 3, 65535]) for _ in range(4)))
            return bytes(data)
        if roll < 0.55:
            return rng.randbytes(rng.randint(0, 600))
        if roll < 0.65:
            return rng.choice(LOOPS)
        if roll < 0.75:  # 0 or 3 questions
            count = rng.choice([0, 3])
            return header(count) + b"\x05goods\x07service\x04mesh\x00\x00\x01\x00\x01" * count
        if roll < 0.85:  # another opcode, or a response
            flags = rng.choice([dns.opcode.NOTIFY << 11, dns.opcode.UPDATE << 11, 0x8000, 0xFFFF])
            return header(1, flags) + b"\x04mesh\x00\x00\x06\x00\x01"
        query = dns.message.make_query(rng.choice(NAMES), "SRV", use_edns=0, payload=512)
        size = rng.choice([100, 4000, 30000])
        query.use_edns(0, 0, 512, options=[dns.edns.GenericOption(65001, b"x" * size)])
        return query.to_wire(max_size=65535)

    def packet(self) -> tuple[bytes, bool]:
        """A packet, and whether it is hostile."""
        if self.rng.random() < 0.5:
            return self.valid(), False
        return self.hostile(), True


@dataclass
class DnsTally:
    packets: int = 0
    hostile: int = 0
    udp_answers: int = 0
    tcp_connections: int = 0
    tcp_answers: int = 0
    stalls: int = 0
    not_closed: int = 0  # TCP connections the server never closed
    answering_after: bool = False

    def result(self) -> dict[str, Any]:
        return {f"dns_{key}": value for key, value in vars(self).items()}


class _Counter(asyncio.DatagramProtocol):
    def __init__(self, tally: DnsTally) -> None:
        self.tally = tally

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tally.udp_answers += 1

    def error_received(self, exc: Exception) -> None:
        pass


async def _tcp_session(forge: DnsForge, port: int, count: int, tally: DnsTally) -> None:
    """A few framed packets on one connection (or a stall), then wait for the server to close."""
    stall = forge.rng.random() < STALL_SHARE
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return
    tally.tcp_connections += 1
    try:
        with contextlib.suppress(OSError, RuntimeError):
            if stall:
                tally.stalls += 1
                writer.write(struct.pack("!H", 400) + forge.valid())
            else:
                for _ in range(count):
                    data, hostile = forge.packet()
                    tally.packets += 1
                    tally.hostile += hostile
                    writer.write(struct.pack("!H", len(data) & 0xFFFF) + data)
                writer.write_eof()
            await writer.drain()
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                while True:
                    size = await reader.readexactly(2)
                    await reader.readexactly(struct.unpack("!H", size)[0])
                    tally.tcp_answers += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # closed by the server: what we wait for
        except TimeoutError:
            tally.not_closed += 1
    finally:
        writer.transport.abort()


async def fire_dns(forge: DnsForge, ports: list[int], total: int, tally: DnsTally) -> float:
    """Fire `total` packets at `ports`; returns the seconds taken."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Counter(tally), local_addr=("127.0.0.1", 0)
    )
    sessions: set[asyncio.Task[None]] = set()
    try:
        while tally.packets < total:
            for _ in range(BATCH):
                if tally.packets >= total:
                    break
                port = forge.rng.choice(ports)
                if forge.rng.random() < TCP_SHARE / 4:  # a session carries about 4
                    count = min(forge.rng.randint(1, 8), total - tally.packets)
                    task = asyncio.create_task(_tcp_session(forge, port, count, tally))
                    sessions.add(task)
                    task.add_done_callback(sessions.discard)
                    continue
                data, hostile = forge.packet()
                if len(data) <= 65507:  # the most one UDP datagram over IPv4 carries
                    transport.sendto(data, ("127.0.0.1", port))
                tally.packets += 1
                tally.hostile += hostile
            # yield, so answers are read and the sessions run; the servers' own pace is
            # what we measure, not how fast our socket fills
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.5)  # the last answers
        if sessions:
            await asyncio.gather(*sessions)
    finally:
        transport.close()
        for task in sessions:
            task.cancel()
    return time.monotonic() - started


def answering(ports: list[int], name: str = "n0.node.mesh") -> bool:
    """Every port answers a plain query over UDP and over TCP."""
    for port in ports:
        for ask in (dns.query.udp, dns.query.tcp):
            try:
                response = ask(dns.message.make_query(name, "A"), "127.0.0.1", 5, port)
            except (OSError, dns.exception.DNSException):
                return False
            if response.rcode() != dns.rcode.NOERROR or not response.answer:
                return False
    return True


def report_line(result: dict[str, Any]) -> str:
    r = result
    return (
        f"fuzz: dns: {r['dns_packets']} packets ({r['dns_hostile']} hostile) in "
        f"{r['dns_seconds']:.1f} s: {r['dns_packets'] / max(r['dns_seconds'], 1e-9):.0f}/s; "
        f"answers {r['dns_udp_answers']} over UDP, {r['dns_tcp_answers']} over "
        f"{r['dns_tcp_connections']} TCP connections ({r['dns_stalls']} stalls); never closed: "
        f"{r['dns_not_closed']}; every port answering after: "
        f"{'yes' if r['dns_answering_after'] else 'NO'}"
    )
