"""A gateway: a node that also serves plain HTTP for users, answered by the `goods` service.

    GATEWAY_PORT=8080 python -m examples.gateway --distributor 127.0.0.1:9000 ...

takes every flag `python -m node` takes; the user port (GATEWAY_PORT, default 8080) listens
on the same host as the node's HTTP API (--http-host). Routes:

    GET /goods          goods.list on any healthy provider
    GET /goods/{sku}    goods.get {"sku": sku}

The answer is the provider's result, with the id of the member that gave it in
`X-Mesh-Member`. A failed request answers with the status the mesh gave it (503: no
provider; 502: the provider failed or was lost mid-request; 504: no answer in time;
429: busy) and `{"error": "..."}`.

Lifecycle: the gateway listens before the node starts and closes first on SIGTERM (new
users are refused, requests in flight finish), then the node leaves the mesh as usual.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from node import run as node_run
from node.app import Node
from node.config import NodeConfig
from node.errors import RequestFailed
from shared.config import ConfigError, join_address
from shared.http import json_response, start_http
from shared.looplag import LoopLag
from shared.program import listen_or_fail, run_program
from shared.wire import is_port

log = structlog.get_logger()

SERVICE = "goods"
DEFAULT_PORT = 8080


class Gateway:
    """The user-facing routes; each one is a request to the `goods` service through the node."""

    def __init__(self) -> None:
        self.node: Node | None = None  # set by attach(), before the node starts

    def attach(self, node: Node) -> None:
        """node.run's setup hook: remember the node the routes call through."""
        self.node = node

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/goods", self.list_goods)
        app.router.add_get("/goods/{sku}", self.get_item)
        return app

    async def list_goods(self, request: web.Request) -> web.Response:
        return await self.call("list", {})

    async def get_item(self, request: web.Request) -> web.Response:
        return await self.call("get", {"sku": request.match_info["sku"]})

    async def call(self, method: str, body: Any) -> web.Response:
        if self.node is None:
            return json_response({"error": "the gateway's node is starting"}, 503)
        try:
            member, result = await self.node.call(method=method, body=body, service=SERVICE)
        except RequestFailed as exc:  # the one place a mesh failure becomes an HTTP answer
            return _answer({"error": str(exc)}, exc.status, exc.member)
        return _answer(result, 200, member)


def _answer(body: Any, status: int, member: str | None) -> web.Response:
    response = json_response(body, status)
    if member is not None:
        response.headers["X-Mesh-Member"] = member
    return response


@dataclass(frozen=True)
class GatewayConfig:
    node: NodeConfig
    port: int  # GATEWAY_PORT


def parse(argv: list[str]) -> GatewayConfig:
    """The node's command line, and GATEWAY_PORT (a bad one exits 2 with one line)."""
    config = node_run.parse(argv)
    port = os.environ.get("GATEWAY_PORT", str(DEFAULT_PORT))
    if not is_port(port, zero=True):
        raise ConfigError(f"GATEWAY_PORT must be a port number, not {port!r}")
    return GatewayConfig(config, int(port))


async def serve(config: GatewayConfig, lag: LoopLag, stop: asyncio.Event) -> None:
    """node.run.serve, with the gateway's HTTP server around it.

    `stop` (SIGTERM/SIGINT) closes the gateway first; only then is the node told to
    leave (`leave`), so no user request is cut off by the node going away under it.
    """
    gateway = Gateway()
    host = config.node.http_host
    runner = await listen_or_fail(
        "the gateway",
        # its users may be web pages of any origin, on purpose: no cross-origin refusal
        start_http(gateway.app(), host, config.port, refuse_cross_origin=False),
        join_address(host, config.port),
    )
    log.info("gateway_listening", address=join_address(host, int(runner.addresses[0][1])))
    leave = asyncio.Event()

    async def close_gateway_then_leave() -> None:
        await stop.wait()
        try:
            await runner.cleanup()  # refuses new users; those in flight finish (0.5 s at most)
        finally:
            leave.set()

    closer = asyncio.create_task(close_gateway_then_leave())
    try:
        await node_run.serve(config.node, lag, leave, setup=gateway.attach)
    finally:
        closer.cancel()
        await asyncio.gather(closer, return_exceptions=True)
        await runner.cleanup()  # a no-op when the closer did it; else the node ended first


def main() -> None:
    run_program("gateway", parse, serve)


if __name__ == "__main__":
    main()
