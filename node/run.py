"""Running a node from the command line: `python -m node`, or a service of your own.

A service is a node with handlers of its own::

    from node.run import main

    async def greet(body, caller):
        return {"hello": caller.name}

    main(setup=lambda node: node.handlers.add("greet", greet))
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable

from node import config as node_config
from node.app import Node
from node.gateway import Gateway
from node.http import make_app
from shared import log as mesh_log
from shared.config import join_address
from shared.dnsserver import start_dns
from shared.dnsview import View
from shared.looplag import LoopLag
from shared.program import listen_or_fail, run_program, start_api
from shared.wire import Member


def parse(argv: list[str]) -> node_config.NodeConfig:
    config = node_config.parse(argv, os.environ)
    mesh_log.configure(config.log_level)
    return config


def dns_view(node: Node) -> View:
    """What a node answers DNS from: itself (reachable), its peers (reachable while their
    link is connected), and members it knows of but has no link to (for their node names)."""
    view: list[tuple[Member, bool]] = [(node.member, True)]
    peers = node.mesh.peers
    view += [(peer.member, peer.status.state == "connected") for peer in peers.values()]
    view += [(member, False) for member in node.membership.members() if member.id not in peers]
    return view


async def serve(
    config: node_config.NodeConfig,
    lag: LoopLag,
    stop: asyncio.Event,
    setup: Callable[[Node], None] | None = None,
) -> None:
    node = Node(config, lag)
    if setup is not None:
        setup(node)
    await listen_or_fail("peers", node.start(), join_address(config.host, config.port))
    dns = await start_dns(config, functools.partial(dns_view, node))
    runner = await start_api(make_app(node), config)
    node.http_port = int(runner.addresses[0][1])  # before the first hello, which carries it
    node.view_signal.notify()  # our record now has its HTTP address
    gateway, gateway_runner = None, None
    try:
        if config.gateway_port:
            gateway = Gateway(node)
            gateway_runner = await listen_or_fail(
                "the gateway",
                gateway.start(config.http_host, config.gateway_port),
                join_address(config.http_host, config.gateway_port),
            )
        await node.run(stop)
    finally:
        if dns is not None:
            await dns.stop()
        if gateway is not None and gateway_runner is not None:
            await gateway.close(gateway_runner)
        await runner.cleanup()


def main(setup: Callable[[Node], None] | None = None) -> None:
    """Parse the command line, run a node until SIGTERM/SIGINT; `setup` adds handlers first."""
    run_program("node", parse, functools.partial(serve, setup=setup))
