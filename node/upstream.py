"""The gateway's side toward instances: HTTP/1.1 on kept-alive connections, one small
protocol a connection, responses read by httptools (C, as uvloop's authors keep it).

Why not aiohttp's client: a proxy makes one client request per user request, and aiohttp's
client (request and response objects, tracing, cookies, its own timeouts) cost the gateway
more CPU than everything else it does. This file does only what a proxy needs:
- `connect` fails before anything is sent (ConnectFailed: the gateway may try another
  instance); anything after that may have reached the app and is never sent again;
- the request head is written as given; a body is written as it comes;
- the response's status and headers arrive first (`Exchange.head`), then its body in
  pieces (`Exchange.body()`), with the app paused while the user reads slowly;
- a connection whose response ended cleanly goes back to its pool, for POOL_IDLE seconds
  at most (less than Node.js's own 5 s keep-alive, so the app is never the side that closes
  a connection just as it is reused).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable
from typing import cast

import httptools

from node.expiry import Expiry

POOL_IDLE = 4.0  # seconds an idle connection is kept
POOL_MAX = 64  # idle connections kept for one instance
HIGH_WATER = 256 * 1024  # body bytes buffered before the app is paused


class ConnectFailed(Exception):
    """No connection could be made: nothing was sent."""


class UpstreamError(Exception):
    """The connection failed after the request was (maybe) sent."""


class Exchange(asyncio.Protocol):
    """One connection to an instance, and the one request on it at a time."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self._pool, self.key = pool, key
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset()
        self.idle_since = 0.0
        self._writable = asyncio.Event()  # cleared while the app reads an upload slowly
        self._writable.set()

    def _reset(self) -> None:
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = self._loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._more = asyncio.Event()
        self._complete = False
        self._error: Exception | None = None
        self._paused = False
        self._head_only = False  # a HEAD: the headers end the answer
        self._keep_alive = False

    # -- the protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"a bad HTTP answer: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()  # a writer waiting on a lost connection finds out at its write
        self._pool.forget(self)
        if not self._complete:
            self._fail(UpstreamError(f"the connection closed: {exc or 'by the instance'}"))

    def _fail(self, error: Exception) -> None:
        self._error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: the caller may have gone already
        self._more.set()

    # -- httptools' callbacks --------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # asked here: httptools knows it only while the message is being read
        self._keep_alive = self._parser.should_keep_alive()
        if not self.head.done():
            self.head.set_result(None)
        if self._head_only:
            self._done()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._more.set()
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self._done()

    def _done(self) -> None:
        self._complete = True
        self._more.set()

    # -- the request -------------------------------------------------------------------

    def send(self, head: bytes, head_only: bool) -> None:
        assert self.transport is not None
        self._head_only = head_only
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            raise UpstreamError("the connection closed while the body was sent")
        self.transport.write(data)

    async def drain(self) -> None:
        """Until the app has read enough of an upload (a bounded buffer here)."""
        await self._writable.wait()

    async def response_head(self, timeout: float) -> None:
        """Until the answer's status and headers came (TimeoutError after `timeout`; the
        connection is then closed: its answer may still come, to no one). Not
        asyncio.timeout nor a loop timer a request (this runs for every request through
        the gateway): the pool's Expiry, as the mesh's requests have."""
        if not self.head.done():
            head, expiry = self.head, self._pool.expiry
            key = expiry.add(self._loop.time() + timeout, head)
            try:
                await head
            except TimeoutError:
                if self.transport is not None:
                    self.transport.close()
                raise
            finally:
                expiry.discard(key, head)
        else:
            self.head.result()

    async def body(self) -> AsyncIterator[bytes]:
        """The answer's body as it comes; UpstreamError when the app is lost mid-answer."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= HIGH_WATER // 2 and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
            if self._complete:
                return
            if self._error is not None:
                raise self._error
            self._more.clear()
            await self._more.wait()

    def release(self) -> None:
        """The exchange is over: back to the pool if its answer ended cleanly and the
        connection may be kept, else closed."""
        reusable = (
            self._complete
            and self._error is None
            and not self._head_only
            and self._keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )
        if reusable:
            self._parser = httptools.HttpResponseParser(self)
            self._reset()
            self._pool.put(self)
        elif self.transport is not None:
            self.transport.close()


class Pool:
    """Idle connections by instance (host, port)."""

    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self.expiry = Expiry()  # its exchanges' response-head timeouts
        self._idle: dict[tuple[str, int], list[Exchange]] = {}
        self._all: set[Exchange] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def exchange(self, host: str, port: int) -> Exchange:
        """A connection to host:port: an idle one, or a new one (ConnectFailed if none can
        be made within the connect timeout)."""
        loop = asyncio.get_running_loop()
        idle = self._idle.get((host, port))
        while idle:
            exchange = idle.pop()
            transport = exchange.transport
            if transport is not None and not transport.is_closing():
                return exchange
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, exchange = await loop.create_connection(
                    lambda: Exchange(self, (host, port)), host, port
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        self._all.add(exchange)
        return exchange

    def put(self, exchange: Exchange) -> None:
        idle = self._idle.setdefault(exchange.key, [])
        if len(idle) >= POOL_MAX:
            assert exchange.transport is not None
            exchange.transport.close()
            return
        exchange.idle_since = asyncio.get_running_loop().time()
        idle.append(exchange)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(POOL_IDLE, self._sweep)

    def forget(self, exchange: Exchange) -> None:
        self._all.discard(exchange)
        idle = self._idle.get(exchange.key)
        if idle and exchange in idle:
            idle.remove(exchange)

    def _sweep(self) -> None:
        """Close what was idle for POOL_IDLE; again later while any is kept."""
        self._sweeper = None
        cutoff = asyncio.get_running_loop().time() - POOL_IDLE
        for key, idle in list(self._idle.items()):
            for exchange in [e for e in idle if e.idle_since <= cutoff]:
                idle.remove(exchange)
                if exchange.transport is not None:
                    exchange.transport.close()
            if not idle:
                del self._idle[key]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(POOL_IDLE, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for exchange in list(self._all):
            if exchange.transport is not None:
                exchange.transport.close()
        self._idle.clear()


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 request head, as given (the caller has dropped hop-by-hop headers)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def decoded(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """httptools' header bytes as text (HTTP headers are Latin-1)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
