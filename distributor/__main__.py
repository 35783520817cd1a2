"""python -m distributor: the registry server (see README.md for flags)."""

from __future__ import annotations

import asyncio
import os
import secrets

import structlog

from distributor import config as distributor_config
from distributor.http import make_app
from distributor.registry import Registry
from distributor.server import DistributorServer
from shared import log as mesh_log
from shared.config import join_address
from shared.connection import LoopLag
from shared.program import listen_or_fail, run_program, start_api

log = structlog.get_logger()


def parse(argv: list[str]) -> distributor_config.DistributorConfig:
    config = distributor_config.parse(argv, os.environ)
    mesh_log.configure(config.log_level)
    return config


async def serve(
    config: distributor_config.DistributorConfig,
    lag: LoopLag,
    stop: asyncio.Event,
    server_class: type[DistributorServer] = DistributorServer,  # bench/naive.py swaps it
) -> None:
    registry = Registry(epoch=secrets.token_hex(8), max_members=config.tuning.max_members)
    server = server_class(registry, config.tuning, lag)
    await listen_or_fail(
        "nodes", server.start(config.host, config.port), join_address(config.host, config.port)
    )
    try:
        runner = await start_api(make_app(registry), config)
        try:
            log.info("distributor_ready", address=server.address, http_port=config.http_port)
            await stop.wait()
            log.info("distributor_stopping")
        finally:
            await runner.cleanup()
    finally:
        await server.stop()


if __name__ == "__main__":
    run_program("distributor", parse, serve)
