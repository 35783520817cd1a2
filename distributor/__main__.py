"""python -m distributor: the registry server (see README.md for flags)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import secrets

import structlog

from distributor import config as distributor_config
from distributor import consul
from distributor.http import make_app
from distributor.registry import Registry
from distributor.server import DistributorServer
from distributor.watch import VersionWatch
from shared import log as mesh_log
from shared.config import join_address
from shared.dnsserver import start_dns
from shared.dnsview import View
from shared.looplag import LoopLag
from shared.program import listen_or_fail, run_program, start_api

log = structlog.get_logger()


def parse(argv: list[str]) -> distributor_config.DistributorConfig:
    config = distributor_config.parse(argv, os.environ)
    mesh_log.configure(config.log_level)
    return config


def raise_nofile() -> None:
    """Lift the soft open-file limit to the hard one: a socket per member and per watcher
    (blocking queries, event streams) soon passes a soft default of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def dns_view(registry: Registry) -> View:
    """What the distributor answers DNS from: every registered member, all of them connected."""
    return [(entry.member, True) for entry in registry.entries()]


async def serve(
    config: distributor_config.DistributorConfig,
    lag: LoopLag,
    stop: asyncio.Event,
    server_class: type[DistributorServer] = DistributorServer,  # bench/naive.py swaps it
) -> None:
    raise_nofile()
    registry = Registry(epoch=secrets.token_hex(8), max_members=config.tuning.max_members)
    watch = VersionWatch()
    server = server_class(registry, config.tuning, lag, watch.notify)
    await listen_or_fail(
        "nodes", server.start(config.host, config.port), join_address(config.host, config.port)
    )
    dns = None
    try:
        dns = await start_dns(config, lambda: dns_view(registry))
        app = make_app(registry, watch, stats=server.stats, max_watchers=config.tuning.max_watchers)
        consul.add_routes(app, registry, watch, config, server.address)
        runner = await start_api(app, config)
        try:
            log.info("distributor_ready", address=server.address, http_port=config.http_port)
            await stop.wait()
            log.info("distributor_stopping")
        finally:
            await runner.cleanup()
    finally:
        if dns is not None:
            await dns.stop()
        await server.stop()


if __name__ == "__main__":
    # A join storm makes and drops many small objects (frames, records, tasks) and keeps few:
    # collections every 50,000 allocations instead of 700, and older generations more rarely,
    # took 15-20% off the distributor's CPU in a storm of 5,000 (bench/storm.py)
    gc.set_threshold(50_000, 20, 100)
    run_program("distributor", parse, serve)
