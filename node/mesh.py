"""Peer links: one link per pair of nodes, dialled by the smaller id; requests over them.

The node with the smaller id dials and keeps re-dialling with backoff while the
member is known; the larger id waits to be dialled. Any node accepts a hello
from any node (a seed's, a thawed node's). Links carry heartbeats both ways,
request/response frames, and anti-entropy: each side's member list at link
start, then a digest on every heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from node.handlers import (
    Handlers,
    NotSent,
    PeerUnavailable,
    RequestFailed,
    RequestTimedOut,
    RequestTooLarge,
    TooManyInFlight,
)
from node.linkstatus import LinkStatus
from node.membership import Changes, Membership
from node.metrics import OTHER, NodeStats
from shared.backoff import Backoff
from shared.config import ConfigError, Tuning, split_address
from shared.connection import Link, LinkDown, LinkEnd, Listener, LoopLag, open_link
from shared.framing import encode_frame
from shared.snapshot import split_members
from shared.wire import (
    Error,
    FrameTooLarge,
    Heartbeat,
    Hello,
    Leave,
    Member,
    Members,
    Message,
    Request,
    Response,
    SyncRequest,
)

log = structlog.get_logger()

DIGEST_CACHE_SECONDS = 0.1  # one digest serves every link's heartbeat in that window
SYNC_SPACING_BEATS = 3  # a differing digest asks for the full list at most this often
RESPONSE_OVERHEAD = 256  # room in a frame for a response's own fields around its body


@dataclass(eq=False)
class Session:
    """One live link to a peer and what rides on it; it all ends with the link."""

    link: Link
    # loop time the link came up
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    pending: dict[int, asyncio.Future[Response]] = field(default_factory=dict)  # ours, out
    serving: set[asyncio.Task[None]] = field(default_factory=set)  # theirs, being answered

    def end(self, why: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RequestFailed(f"link died mid-request: {why}"))
        self.pending.clear()
        for task in self.serving:
            task.cancel()


@dataclass(eq=False)
class Peer:
    """One other member and the state of our link to it (as /v1/status shows it)."""

    member: Member
    # connecting | connected | retrying
    status: LinkStatus = field(default_factory=lambda: LinkStatus("connecting"))
    session: Session | None = None
    dialer: asyncio.Task[None] | None = None
    unlinked: asyncio.Event = field(default_factory=asyncio.Event)  # set while no session
    last_sync_request: float = float("-inf")  # loop time we last asked it for its Members
    last_sync_answer: float = float("-inf")  # loop time we last sent it ours on request

    def __post_init__(self) -> None:
        self.unlinked.set()


class Mesh:
    def __init__(
        self,
        membership: Membership,
        handlers: Handlers,
        tuning: Tuning,
        lag: LoopLag,
        hello: Callable[[], Hello],
        on_changes: Callable[[Changes], None],
        stats: NodeStats | None = None,
    ) -> None:
        self.membership = membership
        self.handlers = handlers
        self.stats = NodeStats() if stats is None else stats
        self.tuning = tuning
        self.lag = lag
        self._hello = hello
        self._on_changes = on_changes
        self.peers: dict[str, Peer] = {}
        self._listener = Listener(
            tuning,
            lag,
            hello,
            self._serve_incoming,
            self.stats.peer_traffic,
            self.stats.refusals,
        )
        self._tasks: set[asyncio.Task[None]] = set()  # dialers and request handlers
        self._request_ids = itertools.count(1)
        self._digest_cache: tuple[float, str] | None = None
        self._stopping = False

    @property
    def self_id(self) -> str:
        return self.membership.self_id

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        return await self._listener.start(host, port)

    def say_goodbye(self) -> None:
        """Queue a leave on every live link and stop opening new ones."""
        self._stopping = True
        goodbye = encode_frame(Leave())
        for peer in self.peers.values():
            if peer.session is not None:
                peer.session.link.send_nowait(goodbye)

    async def stop(self) -> None:
        """Say goodbye (if not yet said), then cancel and await everything and close links."""
        self.say_goodbye()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._listener.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_crash)
        return task

    # -- membership changes --------------------------------------------------

    def apply(self, changes: Changes) -> None:
        """Open peers for added members, close them for removed ones."""
        if self._stopping:
            return
        for member in changes.added:
            peer = self.peers.get(member.id)
            if peer is None:
                peer = self.peers[member.id] = Peer(member)
                log.info(
                    "peer_added", peer_id=member.id, peer_name=member.name, address=member.address
                )
            else:
                peer.member = member
            if self.self_id < member.id and (peer.dialer is None or peer.dialer.done()):
                peer.dialer = self._spawn(self._dial(peer))
        for member_id in changes.removed:
            peer = self.peers.pop(member_id, None)
            if peer is not None:
                log.info("peer_dropped", peer_id=member_id, peer_name=peer.member.name)
                if peer.dialer is not None and peer.dialer is not asyncio.current_task():
                    peer.dialer.cancel()
                if peer.session is not None:
                    peer.session.link.abort()  # its serving task ends it and cleans up

    # -- links -----------------------------------------------------------------

    async def _dial(self, peer: Peer) -> None:
        """Keep a link to a larger-id member up for as long as it is a member."""
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_max)
        retry = False  # the first dial is no retry; every later one is
        while self.peers.get(peer.member.id) is peer and not self._stopping:
            await peer.unlinked.wait()  # a link it dialled to us (a seed's) may be up already
            # 'connecting' until the first attempt; after a failure it stays 'retrying'
            self.stats.retries["peer"] += retry
            retry = True
            try:
                link, _ = await self._connect(peer.member)
            except LinkDown as exc:
                peer.status.failed("retrying", exc.end.detail)
                self._refute_if_stale(exc.end)
                log.debug(
                    "peer_dial_failed",
                    peer_name=peer.member.name,
                    attempts=peer.status.attempts,
                    error=exc.end.detail,
                )
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._refute_if_stale(await self._run_link(peer, link))
            await asyncio.sleep(backoff.next_delay())

    def _refute_if_stale(self, end: LinkEnd | None) -> None:
        """A peer holds a tombstone naming us (we were frozen, say): come back newer."""
        if end is not None and end.code == "stale_incarnation":
            self._on_changes(self.membership.refute(self.membership.incarnation))

    async def seed(self, address: str) -> None:
        """Dial a --seed (its id unknown) with backoff until some peer link is up.

        The seed's hello makes it a member, and the link its first peer link; the
        member lists both sides send at link start carry the rest of the mesh.
        """
        backoff = Backoff(self.tuning.retry_base, self.tuning.retry_max)
        slog = log.bind(seed=address)
        retry = False
        while not self._stopping:
            if any(p.status.state == "connected" for p in self.peers.values()):
                backoff.reset()
                retry = False  # a seed dialled when the mesh is lost again: a first attempt
                await asyncio.sleep(self.tuning.heartbeat_interval)
                continue
            self.stats.retries["seed"] += retry
            retry = True
            try:
                link, hello = await self._connect(None, address)
            except LinkDown as exc:
                self._refute_if_stale(exc.end)
                delay = backoff.next_delay()
                slog.info("seed_attempt_failed", error=exc.end.detail, retry_in=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            peer = self.peers.get(hello.id)
            if peer is None:  # ourselves, or a member we know has left
                await link.close()
            else:
                slog.info("seed_reached", peer_name=peer.member.name)
                backoff.reset()
                self._refute_if_stale(await self._run_link(peer, link))
            await asyncio.sleep(backoff.next_delay())

    async def _connect(
        self, member: Member | None, address: str | None = None
    ) -> tuple[Link, Hello]:
        """Dial a member (or a seed's address) and complete the handshake; LinkDown if not."""
        address = member.address if member else address
        assert address is not None
        try:
            host, port = split_address(address)
        except ConfigError as exc:
            raise LinkDown(LinkEnd("protocol", str(exc))) from None
        link = await open_link(host, port, self.tuning, self.lag, self.stats.peer_traffic)
        try:
            hello = await link.handshake(self._hello(), dialer=True)
            if hello.id == self.self_id:
                raise LinkDown(LinkEnd("protocol", f"{address} is this node itself"))
            if member is not None and hello.id != member.id:
                raise LinkDown(LinkEnd("protocol", f"{address} is now {hello.name}"))
        except BaseException:
            await link.close()
            raise
        self._adopt_record(hello)
        return link, hello

    async def _serve_incoming(self, link: Link, hello: Hello) -> None:
        """A link someone dialled to us, past its handshake (the listener closes it)."""
        member = hello.member
        if hello.id == self.self_id:
            return  # we dialled ourselves (a seed list naming us, say): the dialler gives up
        if self.membership.is_covered(member):
            link.send_nowait(Error("stale_incarnation", "that incarnation has left"))
            link.log.info("peer_refused", why="stale incarnation")
            self.stats.refusals.rejected["stale_incarnation"] += 1
            return
        self._adopt_record(hello)
        peer = self.peers.get(member.id)
        if peer is None:
            return  # dropped meanwhile
        if peer.session is not None and self.self_id < member.id:
            # a pair keeps the link its smaller id dialled: ours
            link.log.info("peer_duplicate_link_closed")
            return
        # a smaller id dialling again means its old link is dead: this one replaces it
        await self._run_link(peer, link)

    def _adopt_record(self, hello: Hello) -> None:
        """A peer's hello is first-hand knowledge: learn it (or its newer incarnation)."""
        self._on_changes(self.membership.learn(hello.member))

    async def _run_link(self, peer: Peer, link: Link) -> LinkEnd | None:
        """Serve one peer link until it ends, then close it; it replaces any earlier one.

        Returns why it ended (None when it never started).
        """
        session = Session(link)
        end: LinkEnd | None = None
        try:
            if self.peers.get(peer.member.id) is not peer or self._stopping:
                return None
            if peer.session is not None:
                peer.session.link.abort()  # the pair keeps one link: the newer one
            peer.session = session
            peer.unlinked.clear()
            peer.status.succeeded()
            self.membership.link_up(peer.member.id)
            link.log.info("peer_connected", peer_name=peer.member.name)
            link.heartbeat = self._heartbeat_frame
            self._send_members(link)  # anti-entropy: what we know, at link start
            end = await link.serve(lambda message: self._on_message(peer, session, message))
        finally:
            session.end(end.detail if end else "link closed")
            if peer.session is session:
                self._link_ended(peer, link, end)
            await link.close()
        return end

    def _link_ended(self, peer: Peer, link: Link, end: LinkEnd | None) -> None:
        peer.session = None
        peer.unlinked.set()
        if self.peers.get(peer.member.id) is not peer:
            return
        reason = end.detail if end else "link closed"
        peer.status.set("retrying", reason)
        link.log.info("peer_link_down", reason=end.reason if end else "closed", detail=reason)
        if end is not None and end.reason == "leave":
            changes = self.membership.peer_left(peer.member, time.monotonic())
        else:
            changes = self.membership.link_down(peer.member.id)
        self._on_changes(changes)

    def _on_message(self, peer: Peer, session: Session, message: Message) -> None:
        if isinstance(message, Request):
            if len(session.serving) >= self.tuning.max_inflight:
                error = f"{len(session.serving)} requests already in flight here"
                session.link.send_nowait(Response(message.id, error=error, code="busy"))
                label = message.method if message.method in self.handlers else OTHER
                self.stats.handled[label, "busy"] += 1
                return
            task = self._spawn(self._answer(peer, session.link, message))
            session.serving.add(task)
            task.add_done_callback(session.serving.discard)
        elif isinstance(message, Response):
            future = session.pending.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)
        else:
            self._on_sync(peer, session, message)

    # -- anti-entropy ----------------------------------------------------------

    def announce(self) -> None:
        """Our new record (a PUT /v1/self) to every connected peer, at once: a member may
        always speak for itself, so peers take it unasked (see _on_sync)."""
        frame = encode_frame(Members((self._hello().member,)), self.tuning.max_frame)
        for peer in self.peers.values():
            if peer.session is not None:
                peer.session.link.send_nowait(frame)

    def _send_members(self, link: Link) -> None:
        """Our first-hand members and tombstones, in frames under the cap."""
        me = self._hello().member
        whole = Members(
            (me, *self.membership.first_hand()), self.membership.departures(time.monotonic())
        )
        for part in split_members(whole, self.tuning.max_frame):
            link.send_nowait(part)

    def _digest(self) -> str:
        """count:hash of the sorted id:incarnation pairs we would pass on, ourselves included."""
        now = asyncio.get_running_loop().time()
        if self._digest_cache is None or now - self._digest_cache[0] > DIGEST_CACHE_SECONDS:
            me = self._hello().member
            pairs = sorted(f"{m.id}:{m.incarnation}" for m in (me, *self.membership.first_hand()))
            digest = hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]
            self._digest_cache = (now, f"{len(pairs)}:{digest}")
        return self._digest_cache[1]

    def _heartbeat_frame(self) -> bytes:
        return encode_frame(Heartbeat(self._digest()))

    def _on_sync(self, peer: Peer, session: Session, message: Message) -> None:
        link = session.link
        now = asyncio.get_running_loop().time()
        # at most once per few heartbeats either way: a quiet mesh costs O(1) per beat
        spacing = SYNC_SPACING_BEATS * self.tuning.heartbeat_interval
        if isinstance(message, Members):
            if _speaks_for_itself(peer, message):  # its own new record: first-hand
                self._on_changes(self.membership.learn(message.members[0]))
                return
            # taken only at link start or when we asked: a peer cannot flood us with lists
            asked = max(session.started, peer.last_sync_request)
            if now - asked <= self.tuning.heartbeat_timeout + self.lag.since(asked, now):
                self._on_changes(self.membership.merge(message, time.monotonic()))
        elif isinstance(message, SyncRequest):
            if now - peer.last_sync_answer >= self.tuning.heartbeat_interval:
                peer.last_sync_answer = now
                self._send_members(link)
        elif isinstance(message, Heartbeat) and message.digest:
            if message.digest != self._digest() and now - peer.last_sync_request >= spacing:
                peer.last_sync_request = now
                link.send_nowait(SyncRequest())

    # -- requests --------------------------------------------------------------

    async def _answer(self, peer: Peer, link: Link, request: Request) -> None:
        method = request.method
        body, error = await self.handlers.answer(
            method, request.body, peer.member, self.tuning.max_frame - RESPONSE_OVERHEAD
        )
        label = method if method in self.handlers else OTHER
        self.stats.handled[label, "ok" if error is None else "error"] += 1
        try:
            data = encode_frame(Response(request.id, body, error), self.tuning.max_frame)
        except FrameTooLarge:  # never send an oversize frame: the peer would drop the link
            data = encode_frame(Response(request.id, error="result is over the frame cap"))
        with contextlib.suppress(LinkDown):
            await link.send(data)

    def in_flight(self, peer_id: str) -> int:
        """Our requests waiting for an answer from that peer."""
        peer = self.peers.get(peer_id)
        return len(peer.session.pending) if peer and peer.session else 0

    async def request(self, peer_id: str, method: str, body: Any, timeout: float) -> Any:
        """Send a request to a connected peer and wait for its result."""
        peer = self.peers.get(peer_id)
        if peer is None:
            raise RequestFailed("no such peer")
        session = peer.session
        state = peer.status.state
        if session is None or state != "connected":
            raise PeerUnavailable(f"the link to {peer.member.name} is {state}", state=state)
        if len(session.pending) >= self.tuning.max_inflight:
            raise TooManyInFlight(f"{len(session.pending)} requests already in flight")
        request_id = next(self._request_ids)
        try:
            data = encode_frame(Request(request_id, method, body), self.tuning.max_frame)
        except FrameTooLarge as exc:
            raise RequestTooLarge(str(exc)) from None
        if session.link.writer.is_closing():  # checked with no await before the send below
            raise NotSent(f"the link to {peer.member.name} is closing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        session.pending[request_id] = future
        # A timer on the future, not asyncio.timeout: this runs for every request, and
        # the timer is the cheaper of the two (no task to look up, no cancellation).
        deadline = loop.time() + timeout
        expiry = loop.call_at(deadline, _time_out, future)
        try:
            await session.link.send(data, deadline)
            response = await future
        except TimeoutError:
            raise RequestTimedOut(f"no answer from {peer.member.name} within {timeout} s") from None
        except LinkDown as exc:
            raise RequestFailed(f"link died mid-request: {exc}") from None
        finally:
            expiry.cancel()
            session.pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # set while we waited on the send: seen, not logged as lost
        if response.code == "busy":
            raise TooManyInFlight(f"{peer.member.name} is busy: {response.error}")
        if response.error is not None:
            raise RequestFailed(response.error)
        return response.body


def _speaks_for_itself(peer: Peer, message: Members) -> bool:
    """A Members holding only the sender's own record: an announcement, not a list."""
    return (
        len(message.members) == 1
        and not message.tombstones
        and message.members[0].id == peer.member.id
    )


def _time_out(future: asyncio.Future[Response]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def log_crash(task: asyncio.Task[None]) -> None:
    """A task that should never fail did: say so loudly instead of losing the error."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task_crashed", task=task.get_coro().__qualname__, exc_info=task.exception())
