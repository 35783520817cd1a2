"""Propagation: with n raw clients on a real distributor, how soon do the others hear of a
join, a clean leave (a leave frame) and a crash (the socket closed without a word)?

Every client lives in this process's loop, so one monotonic clock times the event
and every other client's receipt of its member_joined / member_left. The same clients
measure the yardstick, bench/broadcaster.py, a server that only forwards those events.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from typing import Any, Literal

import uvloop

from bench import broadcaster
from bench.procs import distributor
from bench.rawclient import LEAVE, Beats, RawClient, connect
from bench.stats import percentile
from harness.ports import free_port

WAIT = 10.0  # seconds for every client to hear of one event; a miss is reported, not hidden

Server = Literal["distributor", "broadcaster"]


class _Room:
    """The clients, and who heard what when."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[RawClient] = []
        self.heard: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.changed = asyncio.Event()
        self._index = itertools.count()

    def _watch(self, kind: str, member_id: str, reason: str, at: float) -> None:
        self.heard[(kind, member_id)].append(at)
        self.changed.set()

    async def join(self) -> tuple[RawClient, float]:
        client = RawClient(next(self._index), expect=-1, watch=self._watch)
        started = time.monotonic()
        await connect(asyncio.get_running_loop(), client, self.port)
        if client.error:
            raise RuntimeError(f"a client could not join: {client.error}")
        self.clients.append(client)
        return client, started

    async def heard_by_all(self, kind: str, member_id: str, others: int) -> list[float]:
        """Receipt times once every one of `others` clients heard it (or WAIT ran out)."""
        async with asyncio.timeout(WAIT):
            while len(self.heard[(kind, member_id)]) < others:
                self.changed.clear()
                await self.changed.wait()
        return self.heard[(kind, member_id)]


async def _measure(ports: dict[str, int], n: int, trials: int) -> dict[str, dict[str, list[float]]]:
    """Each server's room of n clients; then trial by trial, in turns (who goes first
    alternates), a crash, a leave and the joins that refill the room (issue 23: a slow
    spell of the machine then weighs on both alike)."""
    rooms = {server: _Room(port) for server, port in ports.items()}
    measured = {server: _Samples() for server in ports}
    beats = [Beats(room.clients) for room in rooms.values()]
    for beat in beats:
        beat.start()
    try:
        for room in rooms.values():
            for _ in range(n):
                await room.join()
        await asyncio.sleep(0.5)  # every join heard, the links quiet
        for trial in range(trials):
            order = list(rooms) if trial % 2 == 0 else list(reversed(rooms))
            for server in order:
                await _trial(rooms[server], n, measured[server])
    finally:
        for beat in beats:
            beat.stop()
        for room in rooms.values():
            for client in room.clients:
                client.close()
    return {server: samples.figures() for server, samples in measured.items()}


class _Samples:
    """Latencies (ms) of every receipt, and of the last receipt of each event, by kind."""

    def __init__(self) -> None:
        self.all: dict[str, list[float]] = {"join": [], "leave": [], "crash": []}
        self.last: dict[str, list[float]] = {"join": [], "leave": [], "crash": []}

    def record(self, kind: str, started: float, times: list[float]) -> None:
        latencies = [(t - started) * 1000 for t in times]
        self.all[kind] += latencies
        self.last[kind].append(max(latencies))

    def figures(self) -> dict[str, list[float]]:
        return {**self.all, **{f"{kind}_last": values for kind, values in self.last.items()}}


async def _trial(room: _Room, n: int, samples: _Samples) -> None:
    """A crash and a leave, each followed by a join that brings the room back to n."""
    for kind in ("crash", "leave"):
        gone = room.clients.pop(0)
        started = time.monotonic()
        if kind == "leave":
            gone.send(LEAVE)
        else:
            gone.close()
        samples.record(kind, started, await room.heard_by_all("left", gone.id, n - 1))
        gone.close()
        client, started = await room.join()
        # the join trials are the joins after a crash, so there are `trials` of each
        times = await room.heard_by_all("joined", client.id, n - 1)
        if kind == "crash":
            samples.record("join", started, times)
        await asyncio.sleep(0.05)


def run_pair(n: int, trials: int) -> dict[str, dict[str, Any]]:
    """Join, leave and crash latencies to n-1 clients, per event kind, of a fresh distributor
    and a fresh bare broadcaster measured in turns: {"distributor": ..., "broadcaster": ...}."""
    ports = {"distributor": free_port(), "broadcaster": free_port()}
    with (
        distributor(ports["distributor"], free_port(), n + 8),
        broadcaster.serving(ports["broadcaster"]),
    ):
        measured = uvloop.run(_measure(ports, n, trials))
    return {server: _summary(server, n, trials, m) for server, m in measured.items()}


def run(n: int, trials: int, server: Server = "distributor") -> dict[str, Any]:
    """Join, leave and crash latencies to n-1 clients of a fresh `server` alone."""
    port = free_port()
    serving = (
        distributor(port, free_port(), n + 8)
        if server == "distributor"
        else broadcaster.serving(port)
    )
    with serving:
        measured = uvloop.run(_measure({server: port}, n, trials))
    return _summary(server, n, trials, measured[server])


def _summary(server: str, n: int, trials: int, measured: dict[str, list[float]]) -> dict[str, Any]:
    return {
        kind: {
            "server": server,
            "n": n,
            "trials": trials,
            "p50_ms": round(percentile(measured[kind], 50), 3),
            "p99_ms": round(percentile(measured[kind], 99), 3),
            # the slowest of the n-1 receivers, per trial: when *everyone* knows
            "p50_last_ms": round(percentile(measured[f"{kind}_last"], 50), 3),
            "samples": len(measured[kind]),
        }
        for kind in ("join", "leave", "crash")
    }
