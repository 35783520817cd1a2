"""Watchers (blocking queries, event streams): waking them when the registry's version
moves, and what they share.

One shared event, replaced at every change: a parked watcher costs one waiting future,
never a poll, and a change costs one wake-up per watcher however many are parked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from distributor.documents import Filter, members_document
from distributor.registry import Registry
from shared.http import TooManyWatchers
from shared.viewsignal import ViewSignal

MAX_WATCHERS = 4096  # blocking queries and event streams held at once (MESH_MAX_WATCHERS)
DEFAULT_WAIT = 300.0  # s: a blocking query with an index and no wait (Consul's 5 minutes)
_MAX_CACHED = 64  # distinct encoded bodies kept for the current version


class VersionWatch(ViewSignal):
    """The registry's version moved: `notify()` wakes everyone waiting now, later waiters
    wait for the next move (shared/viewsignal.py's one shared event)."""


@dataclass(frozen=True, slots=True)
class Blocking:
    index: int | None = None  # None: answer at once
    epoch: str | None = None
    wait: float = DEFAULT_WAIT


class Watchers:
    """What blocking queries and event streams share: the registry, the watch, encodings.

    `parked` and `streams` count the blocking queries waiting now and the event
    streams open now; together they are held to `max_watchers`.
    """

    def __init__(
        self,
        registry: Registry,
        watch: VersionWatch,
        keepalive: float,
        write_timeout: float,
        max_watchers: int = MAX_WATCHERS,
    ) -> None:
        self.registry = registry
        self.max_watchers = max_watchers
        self.watch = watch
        self.keepalive = keepalive  # seconds of silence before a stream sends a comment
        self.write_timeout = write_timeout  # seconds a stream waits on a client not reading
        self.closing = False  # the server is shutting down: parked requests answer now
        self.parked = 0
        self.streams = 0
        self._version = -1  # the version the encoded bodies belong to
        self._bodies: dict[object, bytes] = {}

    def body(self, key: object, build: Callable[[], Mapping[str, Any]]) -> bytes:
        """`build()` encoded, once per registry version and key.

        The registry changes only by a new version, so a body encoded at this version is
        the body anyone would make now.
        """
        if self._version != self.registry.version:
            self._version = self.registry.version
            self._bodies.clear()
        body = self._bodies.get(key)
        if body is None:
            if len(self._bodies) >= _MAX_CACHED:  # many distinct filters: start over
                self._bodies.clear()
            body = self._bodies[key] = orjson.dumps(build())
        return body

    def admit(self) -> None:
        """Before a watcher is held: TooManyWatchers when the cap is reached (each one
        held costs memory and a wake-up at every change: a flood must not grow them)."""
        if self.parked + self.streams >= self.max_watchers:
            raise TooManyWatchers(
                f"too many watchers: {self.max_watchers} blocking queries and event streams"
                " are held already (MESH_MAX_WATCHERS)"
            )

    def members_body(self) -> bytes:
        return self.body(("members", Filter()), lambda: members_document(self.registry))

    async def block(self, blocking: Blocking) -> None:
        """Return once the version passes the index, or at once, or after the wait;
        TooManyWatchers (before any wait) when it would park one too many."""
        registry, index = self.registry, blocking.index
        if index is None or index != registry.version:  # passed, or from another run
            return
        if blocking.epoch is not None and blocking.epoch != registry.epoch:
            return
        self.admit()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + blocking.wait
        self.parked += 1
        try:
            while registry.version <= index and not self.closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await self.watch.wait(remaining)
        finally:
            self.parked -= 1

    async def shutdown(self, app: web.Application) -> None:
        """aiohttp's on_shutdown: parked queries answer and streams end, before the
        server waits for its handlers (it would cancel them after its short timeout)."""
        self.closing = True
        self.watch.notify()
