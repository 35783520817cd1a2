"""The textbook comparison: a distributor that sends the whole list to everyone on every change.

`python -m bench.naive` takes the distributor's flags. It is the real server with one
change: where a delta would go out, every other link gets a full snapshot instead
(encoded once and batched per loop iteration, like the deltas). So an event costs
O(N^2) bytes in all and a storm O(N^3).
"""

from __future__ import annotations

import asyncio
import secrets

from distributor.__main__ import parse
from distributor.http import make_app
from distributor.registry import Registry
from distributor.server import DistributorServer
from shared.config import ServerConfig, join_address
from shared.connection import LoopLag
from shared.program import listen_or_fail, run_program, start_api
from shared.wire import Message


class NaiveServer(DistributorServer):
    def _broadcast(self, message: Message) -> None:
        self._queue(self._snapshot())  # the whole list in place of the delta


async def serve(config: ServerConfig, lag: LoopLag, stop: asyncio.Event) -> None:
    registry = Registry(epoch=secrets.token_hex(8), max_members=config.tuning.max_members)
    server = NaiveServer(registry, config.tuning, lag)
    await listen_or_fail(
        "nodes", server.start(config.host, config.port), join_address(config.host, config.port)
    )
    try:
        runner = await start_api(make_app(registry), config)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        await server.stop()


if __name__ == "__main__":
    run_program("naive-distributor", parse, serve)
