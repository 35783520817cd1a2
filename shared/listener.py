"""A TCP listener whose connections each run the handshake, then their owner's serve."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shared.config import Tuning
from shared.link import READ_CHUNK, Link
from shared.linkend import LinkDown, LinkEnd
from shared.looplag import LoopLag
from shared.metrics import Refusals, Traffic
from shared.wire import Error, Hello


class Listener:
    """A TCP listener that owns its connections (httpcore's rule: cleanup safe under cancel).

    Each connection goes through the handshake, at most MESH_MAX_CONNECTIONS at a time
    (beyond that it gets a `full` error frame), then `serve(link, hello)` runs it; the link
    is closed when that returns. stop() cancels and awaits every connection. Its links add
    to `traffic`; refused connections and failed handshakes are counted in `refusals`.
    """

    def __init__(
        self,
        tuning: Tuning,
        lag: LoopLag,
        hello: Callable[[], Hello],
        serve: Callable[[Link, Hello], Awaitable[None]],
        traffic: Traffic | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self.tuning = tuning
        self.lag = lag
        self.traffic = Traffic() if traffic is None else traffic
        self.refusals = Refusals() if refusals is None else refusals
        self._hello = hello
        self._serve = serve
        self._handshaking = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._closing = False

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        tls = self.tuning.tls
        self._server = await asyncio.start_server(
            self._accept,
            host,
            port,
            limit=READ_CHUNK,
            # a burst of dials (a storm of joins) waits in the kernel, not a 1 s SYN retry
            backlog=self.tuning.max_connections,
            ssl=tls.server if tls else None,
            ssl_handshake_timeout=self.tuning.handshake_timeout if tls else None,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            # accepted before stop() but handed to us after it (a TLS handshake that ended
            # late): stop() has already waited for our tasks, so this one must not start;
            # aborted, as a TLS close would wait for the peer's answer with no one awaiting it
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = Link(reader, writer, self.tuning, self.lag, traffic=self.traffic)
        try:
            try:
                hello = await self._admit(link)
                if hello is not None:
                    await self._serve(link, hello)
            finally:
                await link.close()
        except asyncio.CancelledError:
            # stop() ends us, maybe mid-close; Python 3.11's server callback calls exception()
            # on its handler task and prints a traceback if that task ends cancelled
            pass
        finally:
            self._tasks.discard(task)  # only now: stop() also waits out a closing link

    async def _admit(self, link: Link) -> Hello | None:
        """The peer's hello, or None (logged) when the link is refused or fails its handshake."""
        if self._handshaking >= self.tuning.max_connections:
            link.log.warning("connection_refused", why="too many connections in the handshake")
            self.refusals.rejected["handshake_limit"] += 1
            link.send_nowait(Error("full", "too many connections in the handshake"))
            return None
        self._handshaking += 1
        try:
            return await link.handshake(self._hello(), dialer=False)
        except LinkDown as exc:
            link.log.info("handshake_failed", reason=exc.end.reason, detail=exc.end.detail)
            self.refusals.handshake_failed[handshake_failure(exc.end)] += 1
            return None
        finally:
            self._handshaking -= 1


def handshake_failure(end: LinkEnd) -> str:
    """Why a handshake failed, in a word (mesh_handshakes_failed_total's reason): timeout,
    closed, protocol (bad input, or an error frame from the peer), or the code of the
    error frame we refused it with (auth_failed, unsupported_version)."""
    return end.sent or end.reason
