"""The asyncio edge: one TCP stream <-> frames, heartbeats and liveness.

Like httpcore's connection, the socket loop is one small function, exceptions
are mapped to a link's end reason in one place, and cleanup is safe under
cancellation. A link is dead after MESH_HEARTBEAT_TIMEOUT of silence (plus the
process's own event-loop lag), whatever TCP says: that is how a frozen peer is
found, not only a closed socket.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from shared.config import Tuning, join_address
from shared.framing import FrameDecoder, encode_frame
from shared.metrics import LAG_BUCKETS, Buckets, Refusals, Traffic
from shared.wire import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    Error,
    Heartbeat,
    Hello,
    Leave,
    Message,
    ProtocolError,
    UnknownMessageType,
    versions_overlap,
)

log = structlog.get_logger()

READ_CHUNK = 64 * 1024
NONCE_BYTES = 32  # per-link challenge
# the proof's own version: fixed, not the protocol's, so versions 1 and 2 authenticate alike
AUTH_SCHEME = 1
CLOSE_GRACE = 0.5  # seconds to flush a closing link; shutdown must fit in 2 s


class LoopLag:
    """When this process's own timers fired late (memberlist's awareness).

    A liveness timeout is stretched by the stalls since the last frame came in,
    so a stalled process does not blame its peers for its own stall. Stalls that
    ended before that frame excuse nothing: a thawed process is as quick as ever
    to notice a peer that froze after it thawed.
    """

    STALL = 0.05  # lateness below this is scheduling noise, not a stall

    def __init__(self, interval: float = 0.1, window: float = 10.0) -> None:
        self.interval = interval
        # (loop time it ended, seconds): only real stalls, so usually empty and cheap to scan
        self._stalls: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=int(window / interval)
        )
        self._due: float | None = None  # when the sampler should wake next
        self.histogram = Buckets(LAG_BUCKETS)  # how late each tick was (mesh_event_loop_lag)

    def since(self, start: float, now: float) -> float:
        """Seconds this loop was stalled between loop times `start` and `now`.

        A stall still going on (the sampler itself is late) counts so far.
        """
        stalled = 0.0
        for ended, length in reversed(self._stalls):  # newest first: stop at the older ones
            if ended <= start:
                break
            stalled += min(length, ended - start)
        if self._due is not None and now - self._due > self.STALL:
            stalled += now - max(start, self._due)
        return stalled

    def tick(self, now: float) -> None:
        """The sampler woke at loop time `now`: note how late that was, and the next due time."""
        if self._due is not None:
            late = now - self._due
            self.histogram.observe(max(0.0, late))
            if late > self.STALL:
                self._stalls.append((now, late))
        self._due = now + self.interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.tick(loop.time())
            await asyncio.sleep(self.interval)


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """Why a link ended: 'leave', 'closed', 'timeout' or 'protocol' (as in member_left)."""

    reason: str
    detail: str
    code: str | None = None  # the error frame's code, when the peer refused us with one
    sent: str | None = None  # the error frame's code, when we refused the peer with one


class LinkDown(Exception):
    """The link ended while we were reading or writing on it."""

    def __init__(self, end: LinkEnd) -> None:
        super().__init__(end.detail)
        self.end = end


def refused(error: Error) -> LinkDown:
    """The peer's error frame as the end of our link."""
    return LinkDown(LinkEnd("protocol", f"refused: {error.code}: {error.message}", error.code))


def auth_proof(secret: bytes, sender: Hello, receiver: Hello, sender_dialled: bool) -> str:
    """HMAC over the direction, both ids and both nonces (fresh per link).

    The direction and the sender's id come first, so a proof sent back to its
    author (reflection) never matches what the author expects from the other side.
    """
    role = "dialer" if sender_dialled else "accepter"
    text = (
        f"mesh-auth|v{AUTH_SCHEME}|{role}|{sender.id}|{receiver.id}|{sender.nonce}|{receiver.nonce}"
    )
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def peer_label(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return join_address(str(peer[0]), int(peer[1]))
    return "?"


class Link:
    """Frames over one stream; owns the stream and closes it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tuning: Tuning,
        lag: LoopLag,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        traffic: Traffic | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.tuning = tuning
        self.lag = lag
        self.remote = peer_label(writer)
        self.log = logger or log.bind(peer=self.remote)
        self.peer_version = PROTOCOL_VERSION
        self._decoder = FrameDecoder(tuning.max_frame)
        self._loop = asyncio.get_running_loop()
        self.last_received = self._loop.time()
        plain_heartbeat = encode_frame(Heartbeat())
        # the frame each beat sends; peers replace it with one carrying their digest
        self.heartbeat: Callable[[], bytes] = lambda: plain_heartbeat
        # a peer that stops reading must not make us buffer without bound: with more than
        # this left unread, the next write cuts it (so we hold this plus one burst at most)
        self._write_limit = 4 * tuning.max_frame + 64 * 1024
        self._unknown_types: set[str] = set()
        # frames sent after the first in this loop iteration, written as one at its end:
        # a syscall costs more than a small frame (a burst of requests, responses, deltas)
        self._queued: list[bytes] | None = None
        # frames and bytes both ways, shared by the links of one kind (the metrics)
        self._traffic = Traffic() if traffic is None else traffic

    @property
    def local_host(self) -> str | None:
        """Our own address on this connection (the route the peer sees us by)."""
        sockname = self.writer.get_extra_info("sockname")
        return str(sockname[0]) if isinstance(sockname, tuple) else None

    # -- writing -------------------------------------------------------------

    def send_nowait(self, data: Message | bytes, frames: int = 1) -> None:
        """Queue one frame (or pre-encoded frame bytes, `frames` of them) without waiting.

        The first frame of a loop iteration is written at once; later ones in the
        same iteration go out together in one write when it ends (close flushes too).
        """
        if self.writer.is_closing():
            return
        if isinstance(data, Message):
            data = encode_frame(data, self.tuning.max_frame)
        self._traffic.frames_sent += frames
        if self._queued is not None:
            self._queued.append(data)
            return
        self._queued = []
        self._loop.call_soon(self._flush)
        self._write(data)

    def _flush(self) -> None:
        queued, self._queued = self._queued, None
        if queued and not self.writer.is_closing():
            self._write(b"".join(queued))

    def _write(self, data: bytes) -> None:
        # Judged by what the peer left of earlier writes, not by this one: a burst (one
        # loop iteration's frames) over the limit is no sign of a peer that stopped reading.
        if self.writer.transport.get_write_buffer_size() > self._write_limit:
            self.log.warning("link_aborted", why="peer is not reading its frames")
            self.writer.transport.abort()
            return
        self.writer.write(data)
        self._traffic.bytes_sent += len(data)

    async def send(self, data: Message | bytes, deadline: float | None = None) -> None:
        """Send one frame and wait until the OS took it; LinkDown if it could not.

        The wait lasts a heartbeat timeout at most (a peer that reads nothing for that
        long is as good as dead), or until the loop time `deadline`, then TimeoutError.
        """
        self.send_nowait(data)
        # Only a backlog is waited for: the usual frame is taken at once, and a timeout
        # armed for nothing would cost every request and response on the link.
        if self.writer.transport.get_write_buffer_size():
            dead = self._loop.time() + self.tuning.heartbeat_timeout
            try:
                async with asyncio.timeout_at(dead if deadline is None else min(deadline, dead)):
                    await self.writer.drain()
            except OSError as exc:  # TimeoutError is one
                if isinstance(exc, TimeoutError) and deadline is not None and deadline < dead:
                    raise  # the caller's deadline, not the link's end
                raise LinkDown(LinkEnd("closed", f"send failed: {exc!r}")) from None
        if self.writer.is_closing():
            raise LinkDown(LinkEnd("closed", "link is closed"))

    async def _send_heartbeats(self) -> None:
        while not self.writer.is_closing():
            self.send_nowait(self.heartbeat())
            await asyncio.sleep(self.tuning.heartbeat_interval)

    # -- reading -------------------------------------------------------------

    async def receive(self, deadline: float) -> Message:
        """The next message, waiting until the loop time `deadline` at most.

        Every failure is mapped here, once, to a LinkDown with its reason.
        """
        while True:
            try:
                message = self._decoder.next_message()
            except UnknownMessageType as exc:
                if self.peer_version <= PROTOCOL_VERSION:
                    raise LinkDown(LinkEnd("protocol", str(exc))) from None
                if exc.type_name not in self._unknown_types:  # a newer peer: log once, go on
                    self._unknown_types.add(exc.type_name)
                    self.log.info("unknown_message_type_ignored", type=exc.type_name)
                continue
            except ProtocolError as exc:
                raise LinkDown(LinkEnd("protocol", str(exc))) from None
            if message is not None:
                self.last_received = self._loop.time()
                self._traffic.frames_received += 1
                return message
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                raise LinkDown(LinkEnd("timeout", "no frame within the timeout")) from None
            except OSError as exc:
                raise LinkDown(LinkEnd("closed", f"read failed: {exc!r}")) from None
            if not data:
                raise LinkDown(LinkEnd("closed", "connection closed by peer"))
            self._traffic.bytes_received += len(data)
            self._decoder.feed(data)

    async def receive_alive(self) -> Message:
        """The next message, or LinkDown after heartbeat silence (plus our own lag)."""
        while True:
            try:
                return await self.receive(self._silence_deadline())
            except LinkDown as exc:
                # we may have stalled while we waited: give the peer that too
                if exc.end.reason != "timeout" or self._loop.time() >= self._silence_deadline():
                    raise

    def _silence_deadline(self) -> float:
        """Loop time the peer's silence becomes its death: our own stalls since don't count."""
        stalled = self.lag.since(self.last_received, self._loop.time())
        return self.last_received + self.tuning.heartbeat_timeout + stalled

    async def handshake(self, mine: Hello, *, dialer: bool) -> Hello:
        """Exchange hellos (the dialer speaks first) and, with a secret, prove it both ways.

        Returns the peer's hello once its versions overlap ours and, with a
        secret, its proof checks out; all within the handshake timeout.
        """
        deadline = self._loop.time() + self.tuning.handshake_timeout
        mine = replace(mine, nonce=secrets.token_hex(NONCE_BYTES))
        if dialer:
            self.send_nowait(mine)
        theirs = await self._receive_hello(deadline)
        if not dialer:
            self.send_nowait(mine)
        secret = self.tuning.secret
        if secret is not None:
            if theirs.id == mine.id or len(theirs.nonce) != 2 * NONCE_BYTES:
                # our own hello sent back, or no real challenge: nothing to prove against
                self.send_nowait(Error("auth_failed", "a hello with a fresh nonce is required"))
                raise LinkDown(
                    LinkEnd("protocol", "authentication failed: bad hello", sent="auth_failed")
                )
            self.send_nowait(Auth(auth_proof(secret, mine, theirs, dialer)))
            message = await self.receive(deadline)
            if isinstance(message, Error):
                raise refused(message)
            expected = auth_proof(secret, theirs, mine, not dialer).encode()
            given = message.proof.encode() if isinstance(message, Auth) else b""
            if not hmac.compare_digest(given, expected):
                self.send_nowait(Error("auth_failed", "the mesh secret does not match"))
                raise LinkDown(LinkEnd("protocol", "authentication failed", sent="auth_failed"))
        return theirs

    async def _receive_hello(self, deadline: float) -> Hello:
        message = await self.receive(deadline)
        if isinstance(message, Error):
            raise refused(message)
        if not isinstance(message, Hello):
            raise LinkDown(LinkEnd("protocol", f"expected hello, got {message.TYPE}"))
        if not versions_overlap(message):
            text = (
                f"peer speaks versions {message.min_version}..{message.version}, "
                f"we speak {MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}"
            )
            self.send_nowait(Error("unsupported_version", text))
            raise LinkDown(LinkEnd("protocol", text, sent="unsupported_version"))
        self.peer_version = message.version
        self.log = self.log.bind(peer_id=message.id, peer_name=message.name)
        return message

    async def serve(self, on_message: Callable[[Message], None]) -> LinkEnd:
        """Heartbeats out, messages in, until the link ends; returns why it ended."""
        beats = asyncio.create_task(self._send_heartbeats())
        try:
            while True:
                message = await self.receive_alive()
                if isinstance(message, Leave):
                    return LinkEnd("leave", "peer said goodbye")
                if isinstance(message, Error):  # said before the peer closes: end here
                    self.log.warning("peer_error", code=message.code, message=message.message)
                    return refused(message).end
                on_message(message)  # heartbeats too: between peers they carry a digest
        except LinkDown as exc:
            return exc.end
        except ProtocolError as exc:  # a handler rejected what the peer sent
            return LinkEnd("protocol", str(exc))
        finally:
            beats.cancel()
            # wait() never raises: a cancellation of *this* task stays pending, not swallowed
            await asyncio.wait([beats])

    async def close(self) -> None:
        """Close the stream after flushing what is queued (a goodbye, say); safe to call twice.

        A peer that does not read gets a short grace, then the socket is aborted.
        """
        self._flush()
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            self.abort()
        except asyncio.CancelledError:
            self.abort()  # cancelled mid-grace: drop the socket now rather than leak it
            raise

    def abort(self) -> None:
        self.writer.transport.abort()


async def open_link(
    host: str, port: int, tuning: Tuning, lag: LoopLag, traffic: Traffic | None = None
) -> Link:
    """Dial host:port within the handshake timeout; LinkDown if it cannot."""
    try:
        async with asyncio.timeout(tuning.handshake_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, limit=READ_CHUNK, ssl=tuning.tls.client if tuning.tls else None
            )
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a name IDNA refuses
        raise LinkDown(LinkEnd("closed", describe_error(exc))) from None
    return Link(reader, writer, tuning, lag, traffic=traffic)


def describe_error(exc: BaseException) -> str:
    """A failure in a few words, for last_error and logs."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


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
