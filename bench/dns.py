"""DNS queries per second: an SRV answer with 10 instances, from a node, beside the floor.

    python -m bench.dns [--seconds 3] [--repeats 3] [--json]
    python -m bench.dns --floor PORT      (the floor on its own)

Ours: a `python -m node` with --dns-port and 10 instances registered, answering
`goods.service.mesh SRV` (10 SRV records, 10 addresses beside them) from its view. The
floor: a bare dnspython responder on asyncio (uvloop) that parses each query and answers
it with the same 10 + 10 records, fixed, built once: what parsing and rendering cost with
no view, no shuffle and no fitting. The same client for both: one UDP socket in this
process, WINDOW queries in flight (a lost one is given up after LOST seconds), queries with
EDNS so the whole answer fits. Each figure: median of the runs, with min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import time
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.SRV
import dns.rrset
import uvloop

from bench.procs import program
from bench.stats import spread
from harness.ports import free_port
from harness.procs import http

INSTANCES = 10
WINDOW = 64  # queries in flight
LOST = 0.5  # seconds after which an unanswered query counts as lost
NAME = "goods.service.mesh"


def query_wire() -> bytes:
    return dns.message.make_query(NAME, "SRV", use_edns=0, payload=4096).to_wire()


# -- the floor ---------------------------------------------------------------------------


class FloorProtocol(asyncio.DatagramProtocol):
    """Parse, answer with fixed records, render: dnspython's own cost per query."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answer: list[dns.rrset.RRset] = []
        self.additional: list[dns.rrset.RRset] = []
        qname = dns.name.from_text(NAME)
        for i in range(INSTANCES):
            target = dns.name.from_text(f"0a0000{i + 1:02x}.addr.mesh")
            srv = dns.rdtypes.IN.SRV.SRV(
                dns.rdataclass.IN, dns.rdatatype.SRV, 1, 1, 8000 + i, target
            )
            address = dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, f"10.0.0.{i + 1}")
            self.answer.append(dns.rrset.from_rdata(qname, 0, srv))
            self.additional.append(dns.rrset.from_rdata(target, 0, address))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.answer = list(self.answer)
        response.additional = list(self.additional)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(max_size=4096), addr)


async def serve_floor(port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        FloorProtocol, local_addr=("127.0.0.1", port)
    )
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


# -- the client --------------------------------------------------------------------------


class _Client(asyncio.DatagramProtocol):
    def __init__(self, wire: bytes) -> None:
        self.body = wire[2:]
        self.transport: asyncio.DatagramTransport | None = None
        self.outstanding: dict[int, float] = {}  # query id -> when sent
        self.next_id = 0
        self.answered = 0
        self.lost = 0
        self.sample: bytes | None = None
        self.counting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def fill(self) -> None:
        now = time.perf_counter()
        for qid, sent in list(self.outstanding.items()):
            if now - sent > LOST:
                del self.outstanding[qid]
                self.lost += 1
        assert self.transport is not None
        while len(self.outstanding) < WINDOW:
            qid = self.next_id = (self.next_id + 1) % 65536
            self.outstanding[qid] = now
            self.transport.sendto(struct.pack("!H", qid) + self.body)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        (qid,) = struct.unpack_from("!H", data)
        if self.outstanding.pop(qid, None) is None:
            return
        if self.counting:
            self.answered += 1
        self.sample = data
        self.fill()

    def error_received(self, exc: Exception) -> None:
        pass


async def load(port: int, seconds: float, warmup: float = 0.3) -> dict[str, Any]:
    """Queries answered a second by 127.0.0.1:`port`, WINDOW in flight."""
    loop = asyncio.get_running_loop()
    client = _Client(query_wire())
    transport, _ = await loop.create_datagram_endpoint(
        lambda: client, remote_addr=("127.0.0.1", port)
    )
    try:
        client.fill()

        async def refill() -> None:
            while True:
                await asyncio.sleep(LOST / 2)
                client.fill()  # lost queries give their place to new ones

        refilling = asyncio.create_task(refill())
        try:
            await asyncio.sleep(warmup)
            client.counting, client.lost = True, 0
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            client.counting = False
            elapsed = time.perf_counter() - started
        finally:
            refilling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refilling
    finally:
        transport.close()
    records = 0
    if client.sample is not None:
        records = len(dns.message.from_wire(client.sample).answer[0])
    return {
        "qps": round(client.answered / elapsed, 1),
        "answered": client.answered,
        "lost": client.lost,
        "srv_records": records,
    }


# -- the run -------------------------------------------------------------------------------


def _node(dns_port: int) -> Any:
    http_port = free_port()
    args = ["--name", "bench", "--host", "127.0.0.1", "--port", str(free_port())]
    args += ["--http-port", str(http_port), "--dns-port", str(dns_port), "--log-level", "warning"]
    # no distributor: the node answers from its own record
    return program("node", args, {"MESH_DISTRIBUTORS": ""}, http_port), http_port


def _floor(port: int) -> Any:
    return program("bench.dns", ["--floor", str(port)], {})


def run(seconds: float = 3.0, repeats: int = 3) -> dict[str, Any]:
    """Ours and the floor, `repeats` times each in turn; every run, and each one's spread."""
    runs: dict[str, list[dict[str, Any]]] = {"mesh": [], "floor": []}
    dns_port, floor_port = free_port(), free_port()
    node, http_port = _node(dns_port)
    with node, _floor(floor_port):
        for i in range(INSTANCES):
            body = {"name": "goods", "id": f"goods-{i}", "address": f"10.0.0.{i + 1}"}
            code, _ = http(
                "PUT", http_port, "/v1/agent/service/register", {**body, "port": 8000 + i}
            )
            assert code == 200, code
        time.sleep(0.5)  # the floor's process imports dnspython meanwhile
        for _ in range(repeats):
            runs["mesh"].append(uvloop.run(load(dns_port, seconds)))
            runs["floor"].append(uvloop.run(load(floor_port, seconds)))
    result: dict[str, Any] = {"instances": INSTANCES, "seconds": seconds, "runs": runs}
    for who, measured in runs.items():
        figures = spread([r["qps"] for r in measured])
        assert figures is not None
        result[who] = {"min": figures.low, "median": figures.median, "max": figures.high}
    result["ratio"] = round(result["mesh"]["median"] / max(result["floor"]["median"], 1e-9), 3)
    return result


def text(result: dict[str, Any]) -> str:
    mesh, floor = result["mesh"], result["floor"]
    runs = len(result["runs"]["mesh"])
    return (
        f"dns: SRV with {result['instances']} instances, queries/s over UDP (median of {runs}, "
        f"min-max): node {mesh['median']:.0f} ({mesh['min']:.0f}-{mesh['max']:.0f}); "
        f"bare dnspython responder {floor['median']:.0f} ({floor['min']:.0f}-{floor['max']:.0f});"
        f" ratio {result['ratio']:.2f}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dns", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="each run's length")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--floor", type=int, metavar="PORT", help="serve the floor only")
    args = parser.parse_args(argv)
    if args.floor is not None:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(serve_floor(args.floor))
        return 0
    result = run(args.seconds, args.repeats)
    print(json.dumps(result) if args.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
