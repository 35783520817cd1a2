"""The DNS edge: UDP and TCP on one port, answers from shared/dnsview.py.

Both transports are plain asyncio protocols, no task per query: an answer is worked out
and written inside the callback that received the query, so a flood of queries costs the
answers and nothing more (no tasks, no log lines, no buffers that grow). Only a query
about an instance whose address is a host name waits: the name is resolved (once, for
every query that needs it) and cached for a few seconds.

Bad input never ends more than itself: a datagram that is not a query is dropped; a TCP
connection that sends one is closed. TCP connections are bounded (MAX_TCP); when one more
arrives, the one that has been idle longest is closed to make room, so a client that opens
a thousand silent connections holds at most MAX_TCP slots for at most IDLE seconds and
never locks out a client with a real query. A connection with no whole query for IDLE
seconds (silent, slow, or a length prefix larger than what follows) is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, cast

import dns.message
import structlog

from shared.config import ServerConfig, join_address
from shared.dnsview import DnsView, Reply, View, parse_query
from shared.program import listen_or_fail
from shared.tasks import cancel_and_wait

log = structlog.get_logger()

MAX_TCP = 256  # TCP connections held at once; one more closes the longest idle
IDLE = 5.0  # seconds a TCP connection may go without a whole query
RESOLVE_TIMEOUT = 2.0  # seconds a host name may take to resolve
RESOLVED_FOR = 10.0  # seconds a resolved host name is kept
FAILED_FOR = 2.0  # seconds a name that did not resolve is kept as "no address"
MAX_NAMES = 1024  # host names cached; instances are at most 32 a member
MAX_WAITING = 128  # queries waiting for a host name; beyond, answered without it
DROP_LOG_EVERY = 10.0  # seconds between debug lines about dropped packets


class HostNames:
    """Instance addresses that are host names, resolved by the loop's resolver and cached:
    a name is looked up once however many queries need it, and again when its entry ages."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[str, ...], float]] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}

    def get(self, name: str) -> Sequence[str] | None:
        """The addresses of `name` if known and fresh, else None."""
        entry = self._cache.get(name)
        if entry is None or entry[1] < asyncio.get_running_loop().time():
            return None
        return entry[0]

    async def resolve(self, names: frozenset[str]) -> None:
        """Resolve `names` (each at most once at a time); returns within RESOLVE_TIMEOUT."""
        tasks = []
        for name in names:
            task = self._pending.get(name)
            if task is None:
                task = asyncio.create_task(self._lookup(name))
                self._pending[name] = task
                task.add_done_callback(lambda _, name=name: self._pending.pop(name, None))
            tasks.append(task)
        # shielded: one waiting query cancelled does not cancel a lookup others wait for
        await asyncio.wait([asyncio.shield(t) for t in tasks], timeout=RESOLVE_TIMEOUT + 0.5)

    async def _lookup(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        addresses: tuple[str, ...] = ()
        with contextlib.suppress(OSError, TimeoutError, UnicodeError):
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if len(self._cache) >= MAX_NAMES:
            self._cache.clear()  # crude, and rare: only so many instances exist
        keep = RESOLVED_FOR if addresses else FAILED_FOR
        self._cache[name] = (addresses, loop.time() + keep)

    async def close(self) -> None:
        await cancel_and_wait(self._pending.values())


class DnsServer:
    """Answers DNS on UDP and TCP from `view()` (called for every query: it must be cheap)."""

    def __init__(
        self,
        view: Callable[[], View],
        domain: str,
        ttl: int = 0,
        datacenter: str | None = None,
        *,
        max_tcp: int = MAX_TCP,
        idle: float = IDLE,
    ) -> None:
        self._view = view
        self._dns = DnsView(domain, ttl, datacenter)
        self._shuffle = random.Random().shuffle
        self.max_tcp = max_tcp
        self.idle = idle
        self.names = HostNames()
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_paused = False
        self._tcp: asyncio.Server | None = None
        # open TCP connections, least recently active first
        self._connections: OrderedDict[_TcpConnection, None] = OrderedDict()
        self._waiting: set[asyncio.Task[None]] = set()  # queries waiting for host names
        self.dropped = 0  # packets not answered: malformed, or no room to answer
        self.evicted = 0  # idle TCP connections closed to make room for a new one
        self._dropped_logged = (0, 0.0)  # (count, when) of the last debug line about drops
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP at host:port (a bind failure raises OSError, nothing left
        open)."""
        loop = asyncio.get_running_loop()
        self._tcp = await loop.create_server(
            lambda: _TcpConnection(self), host, port, reuse_address=True
        )
        self.port = int(self._tcp.sockets[0].getsockname()[1])
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, self.port)
            )
        except BaseException:
            self._tcp.close()
            raise
        self._udp = cast(asyncio.DatagramTransport, transport)
        log.info("dns_listening", host=host, port=self.port)

    async def stop(self) -> None:
        """Stop answering: close both listeners, every connection, every waiting query."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for connection in list(self._connections):
            connection.abort()
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await self.names.close()
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._tcp.wait_closed()

    @property
    def tcp_connections(self) -> int:
        return len(self._connections)

    # -- queries -------------------------------------------------------------------------

    def answer(self, data: bytes, tcp: bool, send: Callable[[bytes], None]) -> bool:
        """Answer one query now, or later once its host names resolved; False: `data` is not
        a query (drop it; on TCP, close the connection)."""
        query = parse_query(data)
        if query is None:
            self.note_dropped()
            return False
        try:
            reply = self._reply(query, tcp)
        except Exception:  # a query dnspython parses but cannot answer: no answer, not a crash
            self.note_dropped()
            return False
        if reply.unresolved and len(self._waiting) < MAX_WAITING:
            task = asyncio.create_task(self._answer_later(query, tcp, reply.unresolved, send))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            return True
        if reply.wire is not None:
            send(reply.wire)
        return True

    def _reply(self, query: dns.message.Message, tcp: bool, last: bool = False) -> Reply:
        names = self.names
        resolved = (lambda name: names.get(name) or ()) if last else names.get
        return self._dns.answer(
            query, self._view(), tcp=tcp, shuffle=self._shuffle, resolved=resolved
        )

    async def _answer_later(
        self,
        query: dns.message.Message,
        tcp: bool,
        names: frozenset[str],
        send: Callable[[bytes], None],
    ) -> None:
        await self.names.resolve(names)
        try:
            reply = self._reply(query, tcp, last=True)  # a name that did not resolve: no address
        except Exception:  # as in answer()
            self.note_dropped()
            return
        if reply.wire is not None:
            send(reply.wire)

    def note_dropped(self) -> None:
        """Count a packet not answered; a debug line now and then, never one a packet."""
        self.dropped += 1
        count, when = self._dropped_logged
        now = asyncio.get_running_loop().time()
        if now - when >= DROP_LOG_EVERY:
            log.debug("dns_dropped", packets=self.dropped - count, total=self.dropped)
            self._dropped_logged = (self.dropped, now)

    # -- UDP -------------------------------------------------------------------------------

    def datagram(self, data: bytes, addr: Any) -> None:
        transport = self._udp
        if transport is None or transport.is_closing():
            return

        def send(wire: bytes) -> None:
            if self._udp_paused or transport.is_closing():
                self.note_dropped()  # the socket's buffer is full: the client will ask again
                return
            transport.sendto(wire, addr)

        self.answer(data, False, send)

    def udp_paused(self, paused: bool) -> None:
        self._udp_paused = paused

    # -- TCP -------------------------------------------------------------------------------

    def opened(self, connection: _TcpConnection) -> None:
        """A new connection: room is made for it by closing the longest idle one."""
        while len(self._connections) >= self.max_tcp:
            oldest = next(iter(self._connections))
            self._connections.pop(oldest)
            oldest.abort()
            self.evicted += 1
        self._connections[connection] = None

    def active(self, connection: _TcpConnection) -> None:
        if connection in self._connections:
            self._connections.move_to_end(connection)

    def closed(self, connection: _TcpConnection) -> None:
        self._connections.pop(connection, None)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._server.datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an answer to a client gone away: nothing to do about it

    def pause_writing(self) -> None:
        self._server.udp_paused(True)

    def resume_writing(self) -> None:
        self._server.udp_paused(False)


class _TcpConnection(asyncio.Protocol):
    """One TCP client: queries with a 2-byte length prefix (RFC 1035 4.2.2), answered in turn."""

    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server.opened(self)
        self._arm()

    def _arm(self) -> None:
        """(Re)start the idle clock: only a whole query does, so a client that sends a byte
        at a time, or a length prefix larger than what follows, is cut all the same."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._server.idle, self.abort)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        # at most one partial query is kept: whole ones are answered at once, and while
        # the client does not read its answers we stop reading its queries
        buffer = self._buffer
        while not self._writing_paused and len(buffer) >= 2:
            (size,) = struct.unpack_from("!H", buffer)
            if len(buffer) < 2 + size:
                return
            data = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            if not self._server.answer(data, True, self._send):
                self.abort()
                return
            self._server.active(self)
            self._arm()

    def _send(self, wire: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(struct.pack("!H", len(wire)) + wire)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._process()

    def eof_received(self) -> bool | None:
        return None  # the client is done asking: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server.closed(self)
        self._buffer.clear()


async def start_dns(config: ServerConfig, view: Callable[[], View]) -> DnsServer | None:
    """Both programs' DNS, as configured: None with --dns-port 0; a port in use is a
    start-up error (exit 2). Started before the HTTP API, so /healthz means it answers."""
    if not config.dns_port:
        return None
    server = DnsServer(view, config.dns_domain, config.tuning.dns_ttl, config.datacenter)
    address = join_address(config.http_host, config.dns_port)
    await listen_or_fail("DNS", server.start(config.http_host, config.dns_port), address)
    return server
