"""Memory: the RSS of an idle `python -m node`, and of one with 100 peers.

The peers are raw clients that dial the node and do the real peer handshake
(their ids sort first, so the node never dials them back); the node serves each
as a full peer link: a session, heartbeats with digests, its member list.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import uvloop

from bench.procs import program
from bench.rawclient import Beats, RawClient, connect
from harness.ports import free_port
from harness.procs import status_mb

PEERS = 100
SETTLE = 1.0  # seconds for the node to reach a steady state before it is read


def _connected_peers(http_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/status", timeout=5) as resp:
        status = json.loads(resp.read())
    return sum(1 for p in status["peers"] if p["state"] == "connected")


async def _with_peers(port: int, http_port: int, pid: int) -> float:
    loop = asyncio.get_running_loop()
    # "-" sorts before every hex digit: the node's uuid id is larger, so we are the dialers
    clients = [RawClient(i, expect=-1, prefix="-p") for i in range(PEERS)]
    beats = Beats(clients)
    beats.start()
    try:
        await asyncio.gather(*(connect(loop, c, port) for c in clients))
        async with asyncio.timeout(30):
            # the node's own view, over HTTP: polled, there is nothing here to wait on
            while await loop.run_in_executor(None, _connected_peers, http_port) < PEERS:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        await asyncio.sleep(SETTLE)
        return status_mb(pid, "VmRSS")
    finally:
        beats.stop()
        for client in clients:
            client.close()


def _node(name: str) -> tuple[int, int, Any]:
    port, http_port = free_port(), free_port()
    args = ["--name", name, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--http-port", str(http_port), "--log-level", "warning"]
    return port, http_port, program("node", args, {"MESH_DISTRIBUTORS": ""}, http_port)


def run() -> dict[str, Any]:
    _, _, idle = _node("idle")
    with idle as proc:
        time.sleep(SETTLE)
        idle_mb = status_mb(proc.pid, "VmRSS")
    port, http_port, busy = _node("busy")
    with busy as proc:
        busy_mb = uvloop.run(_with_peers(port, http_port, proc.pid))
    return {
        "idle_node_mb": round(idle_mb, 1),
        "node_100_peers_mb": round(busy_mb, 1),
    }
