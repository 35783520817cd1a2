"""The asyncio edge of one link: a TCP stream <-> frames, heartbeats and liveness.

Like httpcore's connection, the socket loop is one small function, exceptions
are mapped to a link's end reason in one place, and cleanup is safe under
cancellation. A link is dead after MESH_HEARTBEAT_TIMEOUT of silence (plus the
process's own event-loop lag), whatever TCP says: that is how a frozen peer is
found, not only a closed socket. The handshake's rules live in shared/handshake.py;
a Link only moves its frames.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from shared.config import Tuning, join_address
from shared.framing import FrameDecoder, encode_frame
from shared.handshake import NONCE_BYTES, Handshake, HandshakeFailed
from shared.linkend import EndReason, LinkDown, LinkEnd, describe_error, refused
from shared.looplag import LoopLag
from shared.metrics import Traffic
from shared.wire import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Hello,
    Leave,
    Message,
    ProtocolError,
    UnknownMessageType,
)

log = structlog.get_logger()

READ_CHUNK = 64 * 1024
CLOSE_GRACE = 0.5  # seconds to flush a closing link; shutdown must fit in 2 s


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
        # True while serve() hands a message over: what is sent in reply is queued, and
        # written once the frames of that read are all handled (before the next read waits)
        self._dispatching = False
        # frames and bytes both ways, shared by the links of one kind (the metrics)
        self._traffic = Traffic() if traffic is None else traffic
        # while serve() runs: the group that owns the link's tasks, and those tasks
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # while a read waits: its deadline (loop time, asked when the watchdog fires)
        self._deadline: Callable[[], float] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._beats: asyncio.TimerHandle | None = None  # the next heartbeat, while serving

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
        Replies to what serve() hands over go out together once the frames of that read
        are all handled.
        """
        if self.writer.is_closing():
            return
        if isinstance(data, Message):  # in the form the peer's version reads
            data = encode_frame(data, self.tuning.max_frame, self.peer_version)
        self._traffic.frames_sent += frames
        if self._queued is not None:
            self._queued.append(data)
            return
        if self._dispatching:  # _receive flushes them before it waits: no callback needed
            self._queued = [data]
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
                raise LinkDown(LinkEnd(EndReason.CLOSED, f"send failed: {exc!r}")) from None
        if self.writer.is_closing():
            raise LinkDown(LinkEnd(EndReason.CLOSED, "link is closed"))

    def _beat(self) -> None:
        # A timer, not a task: at 10,000 links a task's sleep and wake-up per beat was
        # most of an idle distributor's CPU, beside the write itself.
        if self.writer.is_closing():
            self._beats = None
            return
        # bytes still queued for the peer will reach it (a storm's deltas, a snapshot):
        # it hears from us without a beat, which would only wait behind them
        if not self.writer.transport.get_write_buffer_size():
            self.send_nowait(self.heartbeat())
        self._beats = self._loop.call_later(self.tuning.heartbeat_interval, self._beat)

    # -- reading -------------------------------------------------------------

    async def receive(self, deadline: float) -> Message:
        """The next message, waiting until the loop time `deadline` at most.

        Every failure is mapped here, once, to a LinkDown with its reason.
        """
        return await self._receive(lambda: deadline)

    async def receive_alive(self) -> Message:
        """The next message, or LinkDown after heartbeat silence (plus our own lag)."""
        return await self._receive(self._silence_deadline)

    async def _receive(self, deadline: Callable[[], float]) -> Message:
        while True:
            try:
                message = self._decoder.next_message()
            except UnknownMessageType as exc:
                if self.peer_version <= PROTOCOL_VERSION:
                    raise LinkDown(LinkEnd(EndReason.PROTOCOL, str(exc))) from None
                if exc.type_name not in self._unknown_types:  # a newer peer: log once, go on
                    self._unknown_types.add(exc.type_name)
                    self.log.info("unknown_message_type_ignored", type=exc.type_name)
                continue
            except ProtocolError as exc:
                raise LinkDown(LinkEnd(EndReason.PROTOCOL, str(exc))) from None
            if message is not None:
                self.last_received = self._loop.time()
                self._traffic.frames_received += 1
                return message
            if self._queued:
                self._flush()
            self._deadline = deadline
            self._watch(deadline())
            try:
                data = await self.reader.read(READ_CHUNK)
            except OSError as exc:
                raise LinkDown(LinkEnd(EndReason.CLOSED, f"read failed: {exc!r}")) from None
            finally:
                self._deadline = None
            if not data:
                raise LinkDown(LinkEnd(EndReason.CLOSED, "connection closed by peer"))
            self._traffic.bytes_received += len(data)
            self._decoder.feed(data)

    # One timer per link for the deadline of its reads, not one per read (asyncio.timeout
    # costs a timer and a cancellation each time, and reads come one a frame when idle):
    # it is moved only to fire earlier, and when it fires late for a deadline that moved
    # on (the peer spoke, or we stalled), it is armed again for that.

    def _watch(self, deadline: float) -> None:
        if self._watchdog is None or deadline < self._watchdog.when():
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = self._loop.call_at(deadline, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self._deadline is None:  # no read waits: the next one arms it again
            return
        deadline = self._deadline()
        if self._loop.time() < deadline:
            self._watch(deadline)
        else:  # the waiting read raises it (and so would any later one: the link is done)
            self.reader.set_exception(
                LinkDown(LinkEnd(EndReason.TIMEOUT, "no frame within the timeout"))
            )

    def _unwatch(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _silence_deadline(self) -> float:
        """Loop time the peer's silence becomes its death: our own stalls since don't count."""
        stalled = self.lag.since(self.last_received, self._loop.time())
        return self.last_received + self.tuning.heartbeat_timeout + stalled

    async def handshake(self, mine: Hello, *, dialer: bool) -> Hello:
        """Run the handshake (shared/handshake.py) within the handshake timeout.

        Returns the peer's hello once its versions overlap ours and, with a
        secret, its proof checks out; LinkDown otherwise (a refusal is sent first).
        """
        deadline = self._loop.time() + self.tuning.handshake_timeout
        nonce = secrets.token_hex(NONCE_BYTES)
        shake = Handshake(mine, dialer=dialer, secret=self.tuning.secret, nonce=nonce)
        try:
            for frame in shake.start():
                self.send_nowait(frame)
            while shake.peer is None:
                for frame in shake.receive(await self.receive(deadline)):
                    self.send_nowait(frame)
                if shake.theirs is not None:  # a newer peer's unknown frames are let by
                    self.peer_version = shake.theirs.version
        except HandshakeFailed as exc:
            if exc.reply is not None:
                self.send_nowait(exc.reply)
            raise
        self.log = self.log.bind(peer_id=shake.peer.id, peer_name=shake.peer.name)
        return shake.peer

    async def serve(self, on_message: Callable[[Message], None]) -> LinkEnd:
        """Heartbeats out, messages in, until the link ends; returns why it ended.

        Heartbeats go out on a timer; the link's tasks (whatever spawn() started on it,
        such as answers to the peer's requests) live in one TaskGroup: when the link ends they
        are cancelled and awaited before serve() returns.
        """
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._beat()
            try:
                return await self._receive_until_end(on_message)
            finally:
                if self._beats is not None:
                    self._beats.cancel()
                    self._beats = None
                self._group = None
                for task in self._tasks:
                    task.cancel()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` for as long as the link serves at most (cancelled when it ends)."""
        if self._group is None:
            work.close()
            raise LinkDown(LinkEnd(EndReason.CLOSED, "link is not serving"))
        task = self._group.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _receive_until_end(self, on_message: Callable[[Message], None]) -> LinkEnd:
        try:
            while True:
                message = await self.receive_alive()
                if isinstance(message, Leave):
                    return LinkEnd(EndReason.LEAVE, "peer said goodbye")
                if isinstance(message, Error):  # said before the peer closes: end here
                    self.log.warning("peer_error", code=message.code, message=message.message)
                    return refused(message).end
                self._dispatching = True
                try:
                    on_message(message)  # heartbeats too: between peers they carry a digest
                finally:
                    self._dispatching = False
        except LinkDown as exc:
            return exc.end
        except ProtocolError as exc:  # a handler rejected what the peer sent
            return LinkEnd(EndReason.PROTOCOL, str(exc))

    async def close(self) -> None:
        """Close the stream after flushing what is queued (a goodbye, say); safe to call twice.

        A peer that does not read gets a short grace, then the socket is aborted.
        """
        self._unwatch()
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
        self._unwatch()
        self.writer.transport.abort()


async def open_link(
    host: str, port: int, tuning: Tuning, lag: LoopLag, traffic: Traffic | None = None
) -> Link:
    """Dial host:port; LinkDown if it cannot.

    The TCP connect has MESH_CONNECT_TIMEOUT (a dead container's address fails fast),
    a TLS handshake on top of it the longer handshake timeout.
    """
    tls = tuning.tls
    try:
        async with asyncio.timeout(tuning.connect_timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_CHUNK)
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a name IDNA refuses
        raise LinkDown(LinkEnd(EndReason.CLOSED, describe_error(exc))) from None
    if tls is not None:
        try:
            async with asyncio.timeout(tuning.handshake_timeout):
                await writer.start_tls(tls.client, server_hostname=host)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            writer.transport.abort()
            raise LinkDown(LinkEnd(EndReason.CLOSED, describe_error(exc))) from None
    return Link(reader, writer, tuning, lag, traffic=traffic)
