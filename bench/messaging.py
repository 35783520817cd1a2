"""Messaging: request/response over a real mesh link against a bare echo with the same framing.

The mesh: node B is a `python -m node` process; node A runs in this process and
calls `await node.request(b, "echo", body)`, the Python API services use, so
the figure is the mesh link's (Request frames, the peer's handler, the Response),
not HTTP's. The bare ones: bench/echo.py in a process, called from here by a minimal
client of the same framing, in two forms: batched (the responses to one read go out
in one write, as the mesh link does) and unbatched (one write a response, as
`python -m bench.messaging PORT` serves them). The ratio is to the better of the two.
Each is measured twice: throughput with CONCURRENCY callers, then latency one
request at a time, in ROUNDS short turns of the three in a row (issue 23: the machine's
mood then weighs on each alike), so every round has its own ratios. The mesh is also
measured with node A on asyncio's default loop instead of uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import uvloop

from bench.echo import EchoProtocol
from bench.procs import program
from harness.ports import free_port
from node.app import Node
from node.config import parse as parse_node
from shared.framing import FrameDecoder, encode_frame
from shared.looplag import LoopLag
from shared.wire import Request, Response

CONCURRENCY = 32
ROUNDS = 10  # turns of bare, unbatched and mesh in a row, each with its ratios
BODY = {"service": "bench", "payload": "x" * 64}

Call = Callable[[], Awaitable[Any]]


async def _load(call: Call, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    """Calls made by `concurrency` callers in `seconds`, and each call's latency (s)."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller() -> None:
        while (started := time.perf_counter()) < end:
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies), latencies


async def measure(call: Call, seconds: float) -> dict[str, Any]:
    from bench.stats import percentile

    for _ in range(200):  # warm up: the first calls pay for imports and buffers
        await call()
    count, _ = await _load(call, seconds / 2, CONCURRENCY)
    _, latencies = await _load(call, seconds / 2, 1)
    return {
        "rps": round(count / (seconds / 2)),
        "p50_us": round(percentile(latencies, 50) * 1e6, 1),
        "p99_us": round(percentile(latencies, 99) * 1e6, 1),
        "concurrency": CONCURRENCY,
        "latency_concurrency": 1,
    }


class _EchoClient(asyncio.Protocol):
    """Requests out, responses matched back by id: the least a framed client can do."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._ids = itertools.count(1)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._decoder.feed(data)
        while (message := self._decoder.next_message()) is not None:
            if isinstance(message, Response):
                future = self._pending.pop(message.id)
                future.set_result(message)

    async def call(self) -> Any:
        assert self._transport is not None
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._transport.write(encode_frame(Request(request_id, "echo", BODY)))
        return (await future).body


async def _mesh(seed_port: int, seconds: float) -> dict[str, Any]:
    async with _node_a(seed_port) as call:
        return await measure(call, seconds)


@contextlib.asynccontextmanager
async def _node_a(seed_port: int) -> AsyncIterator[Call]:
    """Node A in this loop, linked to node B at seed_port: a call of B's echo."""
    argv = ["--name", "bench-a", "--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
    config = parse_node([*argv, "--seed", f"127.0.0.1:{seed_port}"], {"MESH_DISTRIBUTORS": ""})
    lag = LoopLag()
    node = Node(config, lag)
    await node.start()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(node.run(stop)), asyncio.create_task(lag.run())]
    try:
        async with asyncio.timeout(20):
            # the node has no event for "a peer is connected": polled
            while not any(p.status.state == "connected" for p in node.mesh.peers.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        peer = next(iter(node.mesh.peers))
        yield lambda: node.request(peer, "echo", BODY, 5.0)
    finally:
        stop.set()
        await tasks[0]
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)


class UnbatchedEchoProtocol(EchoProtocol):
    """The bare echo with one write a response: the baseline without write batching."""

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._decoder.feed(data)
        while (message := self._decoder.next_message()) is not None:
            if isinstance(message, Request):
                self._transport.write(encode_frame(Response(message.id, message.body)))


async def _serve_unbatched(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UnbatchedEchoProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def _bare_echo(module: str) -> Iterator[int]:
    port = free_port()
    with program(module, [str(port)], {}):
        _wait_listening(port)
        yield port


async def _turns(ports: dict[str, int], seed: int, seconds: float) -> dict[str, Any]:
    """The bare echoes and the mesh in turns: ROUNDS rounds of rps then p50 of each."""
    from bench.stats import percentile

    loop = asyncio.get_running_loop()
    transports, calls = [], {}
    for name, port in ports.items():
        transport, client = await loop.create_connection(_EchoClient, "127.0.0.1", port)
        transports.append(transport)
        calls[name] = client.call
    turn = seconds / ROUNDS / 2  # each kind's share of a round, in each mode
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        async with _node_a(seed) as mesh_call:
            calls["mesh"] = mesh_call
            for call in calls.values():
                for _ in range(200):  # warm up: the first calls pay for imports and buffers
                    await call()
            for _ in range(ROUNDS):
                figures: dict[str, dict[str, float]] = {name: {} for name in calls}
                for name, call in calls.items():
                    count, _ = await _load(call, turn, CONCURRENCY)
                    figures[name]["rps"] = count / turn
                for name, call in calls.items():
                    _, latencies = await _load(call, turn, 1)
                    figures[name]["p50_us"] = percentile(latencies, 50) * 1e6
                rounds.append(figures)
    finally:
        for transport in transports:
            transport.close()
    return _summary(rounds)


def _summary(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each kind's median over the rounds, and each round's ratios of the mesh to the better
    bare echo of that round (rps) and to the faster (p50)."""

    def median(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    ratios, latency_ratios = [], []
    for r in rounds:
        bare = [r["bare_echo"], r["bare_unbatched_echo"]]
        ratios.append(round(r["mesh"]["rps"] / max(b["rps"] for b in bare), 3))
        latency_ratios.append(round(r["mesh"]["p50_us"] / min(b["p50_us"] for b in bare), 3))
    kinds = {
        name: {
            "rps": round(median(name, "rps")),
            "p50_us": round(median(name, "p50_us"), 1),
            "concurrency": CONCURRENCY,
            "latency_concurrency": 1,
            "rounds": len(rounds),
        }
        for name in rounds[0]
    }
    return {**kinds, "ratios": ratios, "latency_ratios": latency_ratios}


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _node_b() -> Iterator[int]:
    port, http_port = free_port(), free_port()
    args = ["--name", "bench-b", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--http-port", str(http_port), "--log-level", "warning"]
    with program("node", args, {"MESH_DISTRIBUTORS": ""}, http_port):
        yield port


def run(seconds: float) -> dict[str, Any]:
    """The bare echo batched and unbatched and the mesh (uvloop) in turns (_turns), then the
    mesh on asyncio's loop; `seconds` is each one's measuring time. `ratio` is the median
    of the rounds' ratios of the mesh's rps to the better bare echo's, `latency_ratio` of
    its p50 to the faster bare echo's p50 (one request in flight); `ratios` and
    `latency_ratios` are the rounds' own (their spread)."""
    with (
        _bare_echo("bench.echo") as batched,
        _bare_echo("bench.messaging") as unbatched,
        _node_b() as seed,
    ):
        ports = {"bare_echo": batched, "bare_unbatched_echo": unbatched}
        turns = uvloop.run(_turns(ports, seed, seconds))
    with _node_b() as seed:
        asyncio_mesh = asyncio.run(_mesh(seed, seconds))
    bare, unbatched, mesh = turns["bare_echo"], turns["bare_unbatched_echo"], turns["mesh"]
    fastest = min(bare, unbatched, key=lambda figures: figures["p50_us"])
    return {
        "bare_echo": bare,
        "bare_unbatched_echo": unbatched,
        "mesh": mesh,
        "bare_rps": unbatched["rps"],
        "bare_batched_rps": bare["rps"],
        "mesh_rps": mesh["rps"],
        "ratio": round(statistics.median(turns["ratios"]), 3),
        "ratios": turns["ratios"],
        "ratio_batched": round(mesh["rps"] / bare["rps"], 3),
        "ratio_unbatched": round(mesh["rps"] / unbatched["rps"], 3),
        "bare_p50_us": fastest["p50_us"],
        "mesh_p50_us": mesh["p50_us"],
        "latency_ratio": round(statistics.median(turns["latency_ratios"]), 3),
        "latency_ratios": turns["latency_ratios"],
        "loop": "uvloop",
        "asyncio_mesh": asyncio_mesh,
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":  # the unbatched bare echo: python -m bench.messaging PORT
    uvloop.run(_serve_unbatched(int(sys.argv[1])))
