"""What both programs' __main__ share: start-up errors, uvloop, signals, the lag monitor."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
import uvloop
from aiohttp import web

from shared.config import ConfigError, ServerConfig, fail, join_address
from shared.http import start_http
from shared.looplag import LoopLag

log = structlog.get_logger()
ConfigT = TypeVar("ConfigT")
T = TypeVar("T")


def run_program(
    prog: str,
    parse: Callable[[list[str]], ConfigT],
    serve: Callable[[ConfigT, LoopLag, asyncio.Event], Awaitable[None]],
) -> None:
    """Parse the command line (exit 2 on a bad one), then serve until SIGTERM or SIGINT."""
    try:
        config = parse(sys.argv[1:])
    except ConfigError as exc:
        fail(prog, str(exc))
    try:
        uvloop.run(_main(config, serve))
    except ConfigError as exc:  # found while starting, e.g. a port already in use
        fail(prog, str(exc))


async def _main(
    config: ConfigT, serve: Callable[[ConfigT, LoopLag, asyncio.Event], Awaitable[None]]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run())
    try:
        await serve(config, lag, stop)
    finally:
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task


async def start_api(app: web.Application, config: ServerConfig) -> web.AppRunner:
    """The HTTP API on --http-host/--http-port, with the token if one is set."""
    return await listen_or_fail(
        "HTTP",
        start_http(app, config.http_host, config.http_port, config.http_token),
        join_address(config.http_host, config.http_port),
    )


async def listen_or_fail(what: str, start: Awaitable[T], address: str) -> T:
    """Start a listener; a bind failure is a start-up error, not a traceback."""
    try:
        return await start
    except OSError as exc:
        raise ConfigError(f"cannot listen for {what} on {address}: {exc.strerror or exc}") from None
