"""Request timeouts in buckets: one loop timer for all the requests due in the same slice
(a node's requests to its peers, node/mesh.py; the gateway's waits for an instance's
response head, node/upstream.py).

A timer a request (uvloop's call_at makes a libuv timer, and its cancel closes it)
cost a node about 8 us of CPU a request, a quarter of what it spends beyond a bare
framed echo (bench/messaging.py). Requests due within GRAIN of each other share a
timer here; a request that is answered leaves its bucket, and a bucket's timer,
once due, fails whatever is still waiting in it. A timeout fires up to GRAIN late.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

GRAIN = 0.01  # seconds: the slice of deadlines one timer covers, and the most one is late


class Expiry:
    """Futures failed with TimeoutError at their deadline (loop time), GRAIN at worst late."""

    def __init__(self) -> None:
        self._buckets: dict[int, set[asyncio.Future[Any]]] = {}  # slice -> futures due then

    def add(self, deadline: float, future: asyncio.Future[Any]) -> int:
        """Fail `future` at `deadline` unless it is done or discarded by then; returns the
        key that discard() takes."""
        key = math.ceil(deadline / GRAIN)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            asyncio.get_running_loop().call_at(key * GRAIN, self._expire, key)
        bucket.add(future)
        return key

    def discard(self, key: int, future: asyncio.Future[Any]) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(future)

    def __len__(self) -> int:
        """Futures waiting for their deadline."""
        return sum(map(len, self._buckets.values()))

    def _expire(self, key: int) -> None:
        for future in self._buckets.pop(key, ()):
            if not future.done():
                future.set_exception(TimeoutError())
