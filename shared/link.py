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
from typing import Any, cast

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


def peer_label(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return join_address(str(peer[0]), int(peer[1]))
    return "?"


class Link(asyncio.Protocol):
    """Frames over one connection; owns it and closes it.

    It is the connection's protocol, not a reader of a stream: while it serves, each
    read's frames are decoded and handed over in the callback that received them (a
    task woken for each read cost an idle link's heartbeats and every request twice).
    Before that (the handshake, a registration's snapshot) receive() takes them one
    by one; what arrives meanwhile is buffered, up to a frame and a read.
    """

    def __init__(
        self,
        tuning: Tuning,
        lag: LoopLag,
        traffic: Traffic | None = None,
    ) -> None:
        self.tuning = tuning
        self.lag = lag
        self.transport: asyncio.Transport | None = None  # set once connected
        self.remote = "?"
        self.log: structlog.typing.FilteringBoundLogger = log
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
        # what we buffer unread before serve(): a whole frame and a read (reads can be
        # larger than READ_CHUNK: the loop's own size, 256 KiB, so that much more at most)
        self._read_limit = tuning.max_frame + READ_CHUNK
        self._reading_paused = False
        self._unknown_types: set[str] = set()
        # frames sent after the first in this loop iteration, written as one at its end:
        # a syscall costs more than a small frame (a burst of requests, responses, deltas)
        self._queued: list[bytes] | None = None
        # True while a read's frames are handed over: what is sent in reply is queued,
        # and written once they are all handled
        self._dispatching = False
        # frames and bytes both ways, shared by the links of one kind (the metrics)
        self._traffic = Traffic() if traffic is None else traffic
        # why the connection is gone, once it is (frames read before stay readable)
        self._lost: LinkEnd | None = None
        self._closed = self._loop.create_future()  # done when the connection is gone
        self._waiter: asyncio.Future[None] | None = None  # a receive() waiting for bytes
        self._drained: list[asyncio.Future[None]] = []  # send()s waiting for a drain
        self._writing_paused = False
        # while serve() runs: who takes the frames, and the end it returns
        self._on_message: Callable[[Message], None] | None = None
        self._served: asyncio.Future[LinkEnd] | None = None
        # told the end at once, in the callback that found it, while serve() runs (the
        # distributor sends a departure on without waiting for serve()'s task to wake)
        self.on_end: Callable[[LinkEnd], None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.TimerHandle | None = None  # the peer's silence deadline
        self._beats: asyncio.TimerHandle | None = None  # the next heartbeat

    @property
    def local_host(self) -> str | None:
        """Our own address on this connection (the route the peer sees us by)."""
        sockname = self.transport.get_extra_info("sockname") if self.transport else None
        return str(sockname[0]) if isinstance(sockname, tuple) else None

    # -- the protocol's callbacks ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance here
        self.transport = cast(asyncio.Transport, transport)
        self.remote = peer_label(transport)
        self.log = log.bind(peer=self.remote)

    def data_received(self, data: bytes) -> None:
        self._traffic.bytes_received += len(data)
        self._decoder.feed(data)
        if self._on_message is not None:
            self._dispatch()
            return
        if self._decoder.buffered > self._read_limit and not self._reading_paused:
            self._reading_paused = True  # receive() or serve() reads on
            assert self.transport is not None  # we are its protocol
            self.transport.pause_reading()
        _wake(self._waiter)

    def eof_received(self) -> bool:
        # The link ends now, as when a read returned nothing: connection_lost comes only
        # once what we still have queued for the peer is flushed, and may never come.
        self._lose(LinkEnd(EndReason.CLOSED, "connection closed by peer"))
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        detail = f"read failed: {exc!r}" if exc else "connection closed by peer"
        self._lose(LinkEnd(EndReason.CLOSED, detail))
        _wake(self._closed)

    def _lose(self, end: LinkEnd) -> None:
        """The connection is gone, for `end` unless the peer's EOF came first: a waiting
        receive() or send() wakes to it, and serve() ends with it."""
        if self._lost is None:
            self._lost = end
        _wake(self._waiter)
        self._wake_drained()
        if self._on_message is not None:
            self._end(self._lost)

    @property
    def backed_up(self) -> bool:
        """More is buffered for the peer than the transport's high-water mark."""
        return self._writing_paused

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drained()

    def _wake_drained(self) -> None:
        drained, self._drained = self._drained, []
        for waiter in drained:
            _wake(waiter)

    # -- writing -------------------------------------------------------------

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def send_nowait(self, data: Message | bytes, frames: int = 1) -> None:
        """Queue one frame (or pre-encoded frame bytes, `frames` of them) without waiting.

        The first frame of a loop iteration is written at once; later ones in the
        same iteration go out together in one write when it ends (close flushes too).
        Replies to what serve() hands over go out together once the frames of that read
        are all handled.
        """
        if self.is_closing():
            return
        if isinstance(data, Message):  # in the form the peer's version reads
            data = encode_frame(data, self.tuning.max_frame, self.peer_version)
        self._traffic.frames_sent += frames
        if self._queued is not None:
            self._queued.append(data)
            return
        if self._dispatching:  # _dispatch flushes them when the read is handled
            self._queued = [data]
            return
        self._queued = []
        self._loop.call_soon(self._flush)
        self._write(data)

    def write_now(self, data: bytes, frames: int) -> None:
        """Pre-encoded frames, written at once (after what is queued, if anything is), with
        no flush armed for later frames: for a sender that batches its own (the
        distributor's flush writes each link once, to thousands of links: kept lean)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._traffic.frames_sent += frames
        if self._queued is not None:
            self._queued.append(data)
        elif self._dispatching:
            self._queued = [data]
        elif self._writing_paused:
            self._write(data)  # it checks the backlog
        else:
            transport.write(data)
            self._traffic.bytes_sent += len(data)

    def _flush(self) -> None:
        queued, self._queued = self._queued, None
        if queued and not self.is_closing():
            self._write(b"".join(queued))

    def _write(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None  # is_closing() said so
        # Judged by what the peer left of earlier writes, not by this one: a burst (one
        # loop iteration's frames) over the limit is no sign of a peer that stopped reading.
        # Below the transport's high-water mark (writing not paused) it is far below it.
        if self._writing_paused and transport.get_write_buffer_size() > self._write_limit:
            self.log.warning("link_aborted", why="peer is not reading its frames")
            transport.abort()
            return
        transport.write(data)
        self._traffic.bytes_sent += len(data)

    async def send(self, data: Message | bytes, deadline: float | None = None) -> None:
        """Send one frame and wait until the OS took it; LinkDown if it could not.

        The wait lasts a heartbeat timeout at most (a peer that reads nothing for that
        long is as good as dead), or until the loop time `deadline`, then TimeoutError.
        """
        self.send_nowait(data)
        await self.sent(deadline)

    async def sent(self, deadline: float | None = None) -> None:
        """What send() waits for once its frame is queued: a backlog to drain (LinkDown if
        the link went meanwhile). A caller that finds the link neither backed up nor closing
        after send_nowait() need not call it."""
        # Only a backlog over the transport's high-water mark is waited for: the usual
        # frame is taken at once, and a timeout armed for nothing would cost every request.
        if self._writing_paused and self._lost is None:
            dead = self._loop.time() + self.tuning.heartbeat_timeout
            try:
                async with asyncio.timeout_at(dead if deadline is None else min(deadline, dead)):
                    while self._writing_paused and self._lost is None:
                        drained = self._loop.create_future()
                        self._drained.append(drained)
                        await drained
            except TimeoutError:
                if deadline is not None and deadline < dead:
                    raise  # the caller's deadline, not the link's end
                raise LinkDown(LinkEnd(EndReason.CLOSED, "send failed: timed out")) from None
        if self.is_closing():
            raise LinkDown(self._lost or LinkEnd(EndReason.CLOSED, "link is closed"))

    def _beat(self) -> None:
        # A timer, not a task: at 10,000 links a task's sleep and wake-up per beat was
        # most of an idle distributor's CPU, beside the write itself.
        if self.is_closing():
            self._beats = None
            return
        # bytes still queued for the peer will reach it (a storm's deltas, a snapshot):
        # it hears from us without a beat, which would only wait behind them
        assert self.transport is not None  # is_closing() said so
        if not self.transport.get_write_buffer_size():
            self.send_nowait(self.heartbeat())
        self._beats = self._loop.call_later(self.tuning.heartbeat_interval, self._beat)

    # -- reading -------------------------------------------------------------

    def _next(self) -> Message | None:
        """The next whole message read, or None; LinkDown (protocol) on bad input."""
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

    async def receive(self, deadline: float) -> Message:
        """The next message, waiting until the loop time `deadline` at most (before serve()).

        Every failure is mapped here, once, to a LinkDown with its reason.
        """
        while (message := self._next()) is None:
            if self._lost is not None:
                raise LinkDown(self._lost)
            self._read_on()
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._waiter
            except TimeoutError:
                raise LinkDown(LinkEnd(EndReason.TIMEOUT, "no frame within the timeout")) from None
            finally:
                self._waiter = None
        return message

    def _read_on(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _dispatch(self) -> None:
        """Hand over every whole message read, until the link's end; then write the
        replies they made, together."""
        assert self._on_message is not None and self._served is not None
        self._dispatching = True
        try:
            while not self._served.done():
                message = self._next()
                if message is None:
                    break
                if isinstance(message, Leave):
                    self._end(LinkEnd(EndReason.LEAVE, "peer said goodbye"))
                elif isinstance(message, Error):  # said before the peer closes: end here
                    self.log.warning("peer_error", code=message.code, message=message.message)
                    self._end(refused(message).end)
                else:
                    self._on_message(message)  # heartbeats too: between peers they carry a digest
        except LinkDown as exc:
            self._end(exc.end)
        except ProtocolError as exc:  # a handler rejected what the peer sent
            self._end(LinkEnd(EndReason.PROTOCOL, str(exc)))
        except Exception as exc:  # a bug of ours: serve() raises it, as a task would
            if not self._served.done():
                self._served.set_exception(exc)
        finally:
            self._dispatching = False
        if self._queued:
            self._flush()

    def _end(self, end: LinkEnd) -> None:
        if self._served is not None and not self._served.done():
            self._served.set_result(end)
            if self.on_end is not None:
                self.on_end(end)

    # The peer's silence deadline: one timer a link, moved on only when it fires (a
    # frame's arrival just notes the time), so an idle link costs a timer a timeout.

    def _watch(self) -> None:
        self._watchdog = self._loop.call_at(self._silence_deadline(), self._on_watchdog)

    def _on_watchdog(self) -> None:
        if self._loop.time() < self._silence_deadline():
            self._watch()  # the peer spoke, or we stalled, since it was armed
        else:
            self._watchdog = None
            self._end(LinkEnd(EndReason.TIMEOUT, "no frame within the timeout"))

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

        Messages are handed to `on_message` as they are read (those read before, too).
        Heartbeats go out on a timer; the link's tasks (whatever spawn() started on it,
        such as answers to the peer's requests) live in one TaskGroup: when the link ends
        they are cancelled and awaited before serve() returns.
        """
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._served = self._loop.create_future()
            self._on_message = on_message
            try:
                self._beat()
                self._watch()
                self._dispatch()  # what came before serve()
                if self._lost is not None:
                    self._end(self._lost)
                self._read_on()
                return await self._served
            finally:
                self._on_message = None
                self._served = None
                self._unwatch()
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

    async def close(self) -> None:
        """Close the connection after flushing what is queued (a goodbye, say); safe to
        call twice. A peer that does not read gets a short grace, then it is aborted.
        """
        self._unwatch()
        self._flush()
        if self.transport is None:
            return
        self.transport.close()
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()
        except asyncio.CancelledError:
            self.abort()  # cancelled mid-grace: drop the socket now rather than leak it
            raise

    def abort(self) -> None:
        self._unwatch()
        if self.transport is not None:
            self.transport.abort()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def open_link(
    host: str, port: int, tuning: Tuning, lag: LoopLag, traffic: Traffic | None = None
) -> Link:
    """Dial host:port; LinkDown if it cannot.

    The TCP connect has MESH_CONNECT_TIMEOUT (a dead container's address fails fast),
    a TLS handshake on top of it the longer handshake timeout.
    """
    loop = asyncio.get_running_loop()
    link = Link(tuning, lag, traffic)
    try:
        async with asyncio.timeout(tuning.connect_timeout):
            transport, _ = await loop.create_connection(lambda: link, host, port)
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a name IDNA refuses
        raise LinkDown(LinkEnd(EndReason.CLOSED, describe_error(exc))) from None
    if tuning.tls is not None:
        try:
            async with asyncio.timeout(tuning.handshake_timeout):
                secured = await loop.start_tls(
                    transport, link, tuning.tls.client, server_hostname=host
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            transport.abort()
            raise LinkDown(LinkEnd(EndReason.CLOSED, describe_error(exc))) from None
        if secured is None:  # the connection closed during the TLS handshake
            raise LinkDown(LinkEnd(EndReason.CLOSED, "connection closed by peer"))
        link.connection_made(secured)  # start_tls does not tell the protocol its new transport
    return link
