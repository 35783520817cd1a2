"""A TCP listener whose connections each run the handshake, then their owner's serve."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import structlog

from shared.config import Tuning
from shared.link import Link
from shared.linkend import LinkDown, LinkEnd
from shared.looplag import LoopLag
from shared.metrics import Refusals, Traffic
from shared.tasks import cancel_and_wait
from shared.wire import Error, Hello

log = structlog.get_logger()

ACCEPT_RETRY = 1.0  # seconds before accepting again after an accept failed


class Listener:
    """A TCP listener that owns its connections (httpcore's rule: cleanup safe under cancel).

    Each connection goes through the handshake, at most MESH_MAX_CONNECTIONS at a time
    (beyond that it gets a `full` error frame), then `serve(link, hello)` runs it; the link
    is closed when that returns. stop() cancels and awaits every connection. Its links add
    to `traffic`; refused connections and failed handshakes are counted in `refusals`.

    It accepts every pending connection each time the socket is readable: the loop's own
    server (uvloop's libuv) accepts one per loop iteration, and with thousands of links
    an iteration is long, so a storm of joins would wait in the kernel's queue. Each
    connection is a task of ours from its accept (TLS handshake included), so stop()
    awaits it wherever it is, and a task that ends cancelled is reported to no one.
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: list[socket.socket] = []  # one per address the host resolves to
        self._accept_again: list[asyncio.TimerHandle] = []  # after a failed accept

    async def start(self, host: str, port: int) -> int:
        """Listen on every address `host` resolves to (`localhost`: 127.0.0.1 and ::1, say),
        all on one port; returns that port (the kernel's pick for port 0, taken by the
        first address, then asked of the others)."""
        loop = asyncio.get_running_loop()
        resolved = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        # one socket an address: a name listed twice (/etc/hosts) resolves to it twice
        addresses = dict.fromkeys((family, address[:2]) for family, *_, address in resolved)
        try:
            for family, (ip, _) in addresses:
                bound = int(self._sockets[0].getsockname()[1]) if self._sockets else port
                # a burst of dials (a storm of joins) waits in the kernel, not a 1 s SYN
                # retry; an IPv6 socket is IPv6 only, beside an IPv4 one on the same port
                listening = socket.create_server(
                    (ip, bound), family=family, backlog=self.tuning.max_connections
                )
                self._sockets.append(listening)
                listening.setblocking(False)
                loop.add_reader(listening.fileno(), self._accept_pending, listening)
        except OSError:
            self._close_sockets()
            raise
        return int(self._sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for retry in self._accept_again:
            retry.cancel()
        self._close_sockets()
        await cancel_and_wait(self._tasks)

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for listening in self._sockets:
            loop.remove_reader(listening.fileno())
            listening.close()
        self._sockets.clear()

    def _accept_pending(self, listening: socket.socket) -> None:
        # at most a backlog's worth, so a flood of dials cannot hold the loop
        for _ in range(self.tuning.max_connections):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # reset while in the queue
                continue
            except OSError as exc:
                # out of descriptors, say: the socket stays readable, so wait a while
                # (as asyncio's own server does) rather than fail every iteration
                log.warning("accept_failed", error=repr(exc), retry_in=ACCEPT_RETRY)
                loop, fd = asyncio.get_running_loop(), listening.fileno()
                loop.remove_reader(fd)
                # the handles still to fire (one per socket that failed, not one per failure)
                self._accept_again = [h for h in self._accept_again if h.when() > loop.time()]
                self._accept_again.append(
                    loop.call_later(
                        ACCEPT_RETRY, loop.add_reader, fd, self._accept_pending, listening
                    )
                )
                return
            sock.setblocking(False)
            task = asyncio.create_task(self._connection(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)  # stop() also waits out a closing link

    async def _connection(self, sock: socket.socket) -> None:
        tls = self.tuning.tls
        link = Link(self.tuning, self.lag, self.traffic)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: link,
                sock,
                ssl=tls.server if tls else None,
                ssl_handshake_timeout=self.tuning.handshake_timeout if tls else None,
            )
        except OSError as exc:  # a failed TLS handshake (ssl.SSLError and timeouts are OSErrors)
            sock.close()  # a no-op when the transport took the socket and closed it
            log.info("tls_handshake_failed", error=repr(exc))
            return
        try:
            hello = await self._admit(link)
            if hello is not None:
                await self._serve(link, hello)
        finally:
            await link.close()

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
