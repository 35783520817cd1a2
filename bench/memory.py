"""Memory: the RSS of an idle `python -m node`, of one with 100 peers, of one whose
gateway is on with 32 instances checked every second, and of a distributor holding 10,000
members and 1,000 watchers.

The peers are raw clients that dial the node and do the real peer handshake
(their ids sort first, so the node never dials them back); the node serves each
as a full peer link: a session, heartbeats with digests, its member list.

The gateway node's 32 instances are one Node.js app (examples/polyglot/server.js) under 32
ids, each with an HTTP check of /health every second; it has answered calls through its
gateway before it is read, so its connection pool and check sessions are in use. The
distributor's members are a storm's raw clients (bench/storm.py), its watchers half
blocking queries and half event streams (bench/watchers.py's client).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

from bench import watchers
from bench.gateway import answers
from bench.procs import distributor, program
from bench.rawclient import Beats, RawClient, connect
from bench.storm import Workers
from harness.ports import free_port
from harness.procs import ROOT, http, raise_nofile, status_mb
from harness.waiting import wait_for

SERVER_JS = ROOT / "examples" / "polyglot" / "server.js"
INSTANCES = 32
CHECK_ROUNDS = 5.0  # seconds of checks every second before the gateway node is read
GATEWAY_CALLS = 300
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


def _node(name: str, *extra: str) -> tuple[int, int, Any]:
    port, http_port = free_port(), free_port()
    args = ["--name", name, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--http-port", str(http_port), "--log-level", "warning", *extra]
    return port, http_port, program("node", args, {"MESH_DISTRIBUTORS": ""}, http_port)


def gateway_node_mb(instances: int = INSTANCES) -> float:
    """The RSS of a node whose gateway is on, with `instances` checked every second."""
    node_js = shutil.which("node")
    assert node_js is not None, "the memory benchmark needs node (Node.js)"
    app_port, gateway_port = free_port(), free_port()
    env = {"PORT": str(app_port), "HOST": "127.0.0.1", "INSTANCE_NAME": "hello"}
    app = subprocess.Popen(
        [node_js, str(SERVER_JS)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for("the app answers", lambda: answers(app_port, "/health"))
        definitions = [
            {
                "name": "hello",
                "id": f"hello-{i}",
                "address": "127.0.0.1",
                "port": app_port,
                "check": {"http": f"http://127.0.0.1:{app_port}/health", "interval": "1s"},
            }
            for i in range(instances)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "instances.json"
            path.write_text(json.dumps({"services": definitions}))
            extra = ("--gateway-port", str(gateway_port), "--instances-file", str(path))
            _, http_port, gateway = _node("gateway", *extra)
            with gateway as proc:

                def passing() -> bool:
                    doc = http("GET", http_port, "/v1/services/hello")[1]
                    found = doc["instances"]
                    return len(found) == instances and all(i["health"] == "passing" for i in found)

                wait_for(f"{instances} instances passing", passing)
                for _ in range(GATEWAY_CALLS):
                    assert answers(gateway_port, "/hello/"), "a gateway call failed"
                time.sleep(CHECK_ROUNDS)
                return status_mb(proc.pid, "VmRSS")
    finally:
        app.kill()
        app.wait()


def loaded_distributor_mb(members: int, queries: int, streams: int) -> dict[str, Any]:
    """The RSS of a distributor holding `members` (a storm's raw clients) and `queries`
    blocking queries and `streams` event streams; None when the storm did not complete."""
    raise_nofile()
    port, http_port = free_port(), free_port()
    entry: dict[str, Any] = {"members": members, "watchers": queries + streams, "mb": None}
    ctx = multiprocessing.get_context("fork")
    with distributor(port, http_port, members + 16) as proc, Workers(port, members, 120.0) as w:
        w.start()
        if sum(r["done"] for r in w.reports()) < members:
            entry["note"] = f"the storm of {members} did not complete"
            return entry
        parent, child = ctx.Pipe()
        client = ctx.Process(
            target=watchers._client_process,
            args=(port, http_port, queries, streams, 0, child),
        )
        client.start()
        child.close()
        try:
            watchers._receive(parent, watchers.WAIT + 30, "its watchers open")
            time.sleep(SETTLE)
            entry["mb"] = round(status_mb(proc.pid, "VmRSS"), 1)
            parent.send("go")
            watchers._receive(parent, 60, "the changes")
            parent.send("stop")
        finally:
            client.join(10)
            if client.is_alive():
                client.kill()
    return entry


def run(smoke: bool = False) -> dict[str, Any]:
    _, _, idle = _node("idle")
    with idle as proc:
        time.sleep(SETTLE)
        idle_mb = status_mb(proc.pid, "VmRSS")
    port, http_port, busy = _node("busy")
    with busy as proc:
        busy_mb = uvloop.run(_with_peers(port, http_port, proc.pid))
    gateway_mb = gateway_node_mb()
    members, queries, streams = (50, 10, 10) if smoke else (10000, 500, 500)
    return {
        "idle_node_mb": round(idle_mb, 1),
        "node_100_peers_mb": round(busy_mb, 1),
        "gateway_node_32_instances_mb": round(gateway_mb, 1),
        "gateway_node_over_idle_mb": round(gateway_mb - idle_mb, 1),
        "distributor_loaded": loaded_distributor_mb(members, queries, streams),
    }
