"""Peer links: one link per pair of nodes, dialled by the smaller id; requests over them.

The node with the smaller id dials and keeps re-dialling with backoff while the
member is known; the larger id waits to be dialled. Any node accepts a hello
from any node (a seed's, a thawed node's). Links carry heartbeats both ways,
request/response frames, and anti-entropy: each side's member list at link
start, then a digest on every heartbeat. This is the asyncio edge: the rules
(which link a pair keeps, what a link's end means, when to sync) are
node/peertable.py's, and the dialling loop is node/reconnect.py's.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from node.errors import (
    NotSent,
    PeerUnavailable,
    RequestFailed,
    RequestTimedOut,
    RequestTooLarge,
    TooManyInFlight,
)
from node.expiry import Expiry
from node.handlers import Handlers, failure, response_frame
from node.linkstatus import LinkStatus
from node.membership import Changes, Membership
from node.metrics import OTHER, NodeStats
from node.peertable import Offer, Peer, PeerTable, Refusal
from node.reconnect import PEER, SEED, keep_linked
from shared.backoff import Backoff
from shared.config import ConfigError, Tuning, split_address
from shared.framing import encode_frame
from shared.link import Link, open_link
from shared.linkend import EndReason, LinkDown, LinkEnd
from shared.listener import Listener
from shared.looplag import LoopLag
from shared.snapshot import split_members
from shared.tasks import cancel_and_wait
from shared.wire import (
    Error,
    FrameTooLarge,
    Heartbeat,
    Hello,
    Leave,
    Members,
    Message,
    Request,
    Response,
    SyncRequest,
)

log = structlog.get_logger()

DIGEST_CACHE_SECONDS = 0.1  # one digest serves every link's heartbeat in that window
# results of these types are answered at once, without asking inspect if they are awaitable
_PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})


@dataclass(eq=False)
class Session:
    """One live link to a peer and what rides on it; it all ends with the link.

    Its answers to the peer's requests are tasks the link owns (link.spawn): they end
    with it.
    """

    link: Link
    pending: dict[int, asyncio.Future[Response]] = field(default_factory=dict)  # ours, out
    answering: int = 0  # theirs, being answered now
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, _: asyncio.Task[None]) -> None:
        self.answering -= 1

    def end(self, why: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RequestFailed(f"link died mid-request: {why}"))
        self.pending.clear()
        self.ended.set()


class Mesh:
    """The sockets and tasks of the peer links; node/peertable.py decides what they mean."""

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
        self.table: PeerTable[Session] = PeerTable(
            membership, lag, tuning.heartbeat_interval, tuning.heartbeat_timeout
        )
        self._hello = hello
        self._on_changes = on_changes
        self._listener = Listener(
            tuning,
            lag,
            hello,
            self._serve_incoming,
            self.stats.peer_traffic,
            self.stats.refusals,
        )
        self._tasks: set[asyncio.Task[None]] = set()  # the long-lived ones: dialers and seeds
        self._dialers: dict[str, asyncio.Task[None]] = {}  # member id -> its dialer
        self._request_ids = itertools.count(1)
        self._expiry = Expiry()  # our requests' timeouts
        self._digest_cache: tuple[float, str] | None = None
        # called when a peer's link comes up or goes down (the Consul view's serfHealth
        # reads link states; node/app.py sets it)
        self.on_link_state: Callable[[], None] = _nothing

    @property
    def self_id(self) -> str:
        return self.membership.self_id

    @property
    def peers(self) -> dict[str, Peer[Session]]:
        return self.table.peers

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        return await self._listener.start(host, port)

    def dial_seeds(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            self._spawn(self._seed(address))

    def say_goodbye(self) -> None:
        """Queue a leave on every live link and stop opening new ones."""
        self.table.stop()
        goodbye = encode_frame(Leave())
        for peer in self.peers.values():
            if peer.session is not None:
                peer.session.link.send_nowait(goodbye)

    async def stop(self) -> None:
        """Say goodbye (if not yet said), then cancel and await everything and close links."""
        self.say_goodbye()
        await cancel_and_wait(self._tasks)
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
        applied = self.table.apply(changes)
        for peer in applied.added:
            member = peer.member
            log.info("peer_added", peer_id=member.id, peer_name=member.name, address=member.address)
        for peer in applied.dial:
            dialer = self._dialers.get(peer.member.id)
            if dialer is None or dialer.done():
                self._dialers[peer.member.id] = self._spawn(self._dial(peer))
        for peer in applied.dropped:
            log.info("peer_dropped", peer_id=peer.member.id, peer_name=peer.member.name)
            dialer = self._dialers.pop(peer.member.id, None)
            if dialer is not None and dialer is not asyncio.current_task():
                # (a change its own link's frame brought arrives from no task: the
                # dialer serving that link is cancelled too, and ends as it would)
                dialer.cancel()
            if peer.session is not None:
                peer.session.link.abort()  # its serving task ends it and cleans up

    # -- links -----------------------------------------------------------------

    def _backoff(self) -> Backoff:
        return Backoff(self.tuning.retry_base, self.tuning.retry_max)

    async def _dial(self, peer: Peer[Session]) -> None:
        """Keep a link to a larger-id member up for as long as it is a member."""
        member_id = peer.member.id

        async def run(dialled: tuple[Link, Hello]) -> LinkEnd | None:
            return await self._run_link(member_id, dialled[0], dialled_by_us=True)

        await keep_linked(
            lambda: self._connect(peer.member.address, member_id),
            run,
            PEER,
            backoff=self._backoff(),
            status=peer.status,
            log=log.bind(peer_name=peer.member.name),
            retries=self.stats.retries,
            keep_going=lambda: self.table.is_current(peer),
            wait_turn=lambda: self._wait_unlinked(member_id),
            on_end=self._refute_if_stale,
        )

    async def _wait_unlinked(self, member_id: str) -> bool:
        """Wait while the pair has a link (one the peer dialled: a seed's); True if it had."""
        waited = False
        while (peer := self.peers.get(member_id)) is not None and peer.session is not None:
            waited = True
            await peer.session.ended.wait()
        return waited

    async def _seed(self, address: str) -> None:
        """Dial a --seed (its id unknown) with backoff whenever no peer link is up.

        The seed's hello makes it a member, and the link its first peer link; the
        member lists both sides send at link start carry the rest of the mesh.
        """
        slog = log.bind(seed=address)

        async def run(dialled: tuple[Link, Hello]) -> LinkEnd | None:
            link, hello = dialled
            slog.info("seed_reached", peer_name=hello.name)
            return await self._run_link(hello.id, link, dialled_by_us=True)

        await keep_linked(
            lambda: self._connect(address),
            run,
            SEED,
            backoff=self._backoff(),
            status=LinkStatus("connecting"),  # not shown: a seed is a peer once it answers
            log=slog,
            retries=self.stats.retries,
            keep_going=lambda: not self.table.stopping,
            wait_turn=self._wait_while_linked,
            on_end=self._refute_if_stale,
        )

    async def _wait_while_linked(self) -> bool:
        """Wait while any peer link is up (the mesh is reached through it); True if one was."""
        waited = False
        while self.table.any_linked() and not self.table.stopping:
            waited = True
            await asyncio.sleep(self.tuning.heartbeat_interval)
        return waited

    def _refute_if_stale(self, end: LinkEnd) -> None:
        """A peer holds a tombstone naming us (we were frozen, say): come back newer."""
        if end.code == "stale_incarnation":
            self._on_changes(self.membership.refute(self.membership.incarnation))

    async def _connect(self, address: str, member_id: str | None = None) -> tuple[Link, Hello]:
        """Dial a member (or a seed, `member_id` unknown), complete the handshake and learn
        its record; LinkDown if any of it fails, or if it is not a member of ours."""
        try:
            host, port = split_address(address)
        except ConfigError as exc:
            raise LinkDown(LinkEnd(EndReason.PROTOCOL, str(exc))) from None
        link = await open_link(host, port, self.tuning, self.lag, self.stats.peer_traffic)
        try:
            hello = await link.handshake(self._hello(), dialer=True)
            refusal = self.table.refusal(hello.member)
            if refusal is Refusal.SELF:
                raise LinkDown(LinkEnd(EndReason.PROTOCOL, f"{address} is this node itself"))
            if member_id is not None and hello.id != member_id:
                raise LinkDown(LinkEnd(EndReason.PROTOCOL, f"{address} is now {hello.name}"))
            if refusal is Refusal.STALE:
                raise LinkDown(LinkEnd(EndReason.PROTOCOL, f"{hello.name} has left"))
            self._adopt_record(hello)
            if hello.id not in self.peers:  # dropped meanwhile, or no room for it
                raise LinkDown(LinkEnd(EndReason.PROTOCOL, f"{hello.name} is not a member"))
        except BaseException:
            await link.close()
            raise
        return link, hello

    async def _serve_incoming(self, link: Link, hello: Hello) -> None:
        """A link someone dialled to us, past its handshake (the listener closes it)."""
        refusal = self.table.refusal(hello.member)
        if refusal is Refusal.SELF:
            return  # we dialled ourselves (a seed list naming us, say): the dialler gives up
        if refusal is Refusal.STALE:
            link.send_nowait(Error("stale_incarnation", "that incarnation has left"))
            link.log.info("peer_refused", why="stale incarnation")
            self.stats.refusals.rejected["stale_incarnation"] += 1
            return
        self._adopt_record(hello)
        await self._run_link(hello.id, link, dialled_by_us=False)

    def _adopt_record(self, hello: Hello) -> None:
        """A peer's hello is first-hand knowledge: learn it (or its newer incarnation)."""
        self._on_changes(self.membership.learn(hello.member))

    async def _run_link(self, member_id: str, link: Link, *, dialled_by_us: bool) -> LinkEnd | None:
        """Offer the link to the table and serve it until it ends if taken, then close it.

        Returns why it ended (None when it was not taken).
        """
        session = Session(link)
        now = asyncio.get_running_loop().time()
        offer, replaced = self.table.offer(member_id, session, dialled_by_us=dialled_by_us, now=now)
        end: LinkEnd | None = None
        try:
            if offer is Offer.DUPLICATE:
                link.log.info("peer_duplicate_link_closed")
            if offer is Offer.DUPLICATE or offer is Offer.NOT_MEMBER:
                return None
            self.on_link_state()
            if replaced is not None:
                replaced.link.abort()  # its serving task ends it and cleans up
            peer = self.peers[member_id]
            link.log.info("peer_connected", peer_name=peer.member.name)
            link.heartbeat = self._heartbeat_frame
            self._send_members(link)  # anti-entropy: what we know, at link start
            end = await link.serve(functools.partial(self._on_message, peer, session))
        finally:
            why = end.detail if end else "link closed"
            session.end(why)
            changes = self.table.link_ended(member_id, session, end, time.monotonic())
            if changes is not None:
                link.log.info("peer_link_down", reason=end.reason if end else "closed", detail=why)
                self.on_link_state()
                self._on_changes(changes)
            await link.close()
        return end

    def _on_message(self, peer: Peer[Session], session: Session, message: Message) -> None:
        if isinstance(message, Request):
            self._on_request(peer, session, message)
        elif isinstance(message, Response):
            future = session.pending.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Members):
            now = asyncio.get_running_loop().time()
            member_id = peer.member.id
            changes = self.table.members_received(
                member_id, session, message, now, time.monotonic()
            )
            self._on_changes(changes)
        elif isinstance(message, SyncRequest):
            now = asyncio.get_running_loop().time()
            if self.table.sync_requested(peer.member.id, session, now):
                self._send_members(session.link)
        elif isinstance(message, Heartbeat) and message.digest:
            now = asyncio.get_running_loop().time()
            digest = self._digest()
            if self.table.heartbeat_received(peer.member.id, session, message.digest, digest, now):
                session.link.send_nowait(SyncRequest())

    def _on_request(self, peer: Peer[Session], session: Session, request: Request) -> None:
        """Answer at once when the handler does not wait (no task per request: the common
        case costs what a bare echo does); else in a task the link owns."""
        link, method = session.link, request.method
        if session.answering >= self.tuning.max_inflight:
            error = f"{session.answering} requests already in flight here"
            link.send_nowait(Response(request.id, error=error, code="busy"))
            self.stats.handled[method if method in self.handlers else OTHER, "busy"] += 1
            return
        try:
            result = self.handlers.start(method, request.body, peer.member)
        except Exception as exc:
            self._respond(link, request, None, failure(method, exc))
            return
        # a JSON value is no awaitable: only a result of another type is looked at closer
        if result.__class__ not in _PLAIN and inspect.isawaitable(result):
            session.answering += 1
            task = link.spawn(self._answer(link, request, result))
            task.add_done_callback(session.answered)
            return
        # the common case, a handler that answered at once: encoded, counted and queued
        # here, with no more work than a bare echo's but the count
        try:
            data = encode_frame(Response(request.id, result), self.tuning.max_frame)
        except (FrameTooLarge, TypeError):  # response_frame turns it into an error frame
            self._respond(link, request, result, None)
            return
        self.stats.handled[method, "ok"] += 1  # start() found its handler: its own label
        link.send_nowait(data)

    # -- anti-entropy ----------------------------------------------------------

    def announce(self) -> None:
        """Our new record (a PUT /v1/self) to every connected peer, at once: a member may
        always speak for itself, so peers take it unasked (node/peertable.py)."""
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

    # -- requests --------------------------------------------------------------

    async def _answer(self, link: Link, request: Request, pending: Awaitable[Any]) -> None:
        """Answer once an async handler is done. Never raises: the link's TaskGroup runs it,
        and a raise would end the link (Handlers.finish turns a failure into an error)."""
        result, error = await self.handlers.finish(request.method, pending)
        self._respond(link, request, result, error)

    def _respond(self, link: Link, request: Request, result: Any, error: str | None) -> None:
        """Send the response, and count it. Its frame is encoded once: a result that is not
        JSON, or over the frame cap, is found there and answered with an error instead
        (never an oversize frame: the peer would drop the link)."""
        data, error = response_frame(request.id, result, error, self.tuning.max_frame)
        method = request.method
        label = method if method in self.handlers else OTHER
        self.stats.handled[label, "ok" if error is None else "error"] += 1
        link.send_nowait(data)

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
        if session.link.is_closing():  # checked with no await before the send below
            raise NotSent(f"the link to {peer.member.name} is closing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        session.pending[request_id] = future
        # Not asyncio.timeout (a task to look up, a cancellation) nor a timer a request:
        # the future fails at its deadline from a timer shared by the requests due then
        deadline = loop.time() + timeout
        expiry_key = self._expiry.add(deadline, future)
        link = session.link
        try:
            link.send_nowait(data)
            if link.backed_up or link.is_closing():  # rare: a backlog, or the link going
                await link.sent(deadline)
            response = await future
        except TimeoutError:
            raise RequestTimedOut(f"no answer from {peer.member.name} within {timeout} s") from None
        except LinkDown as exc:
            raise RequestFailed(f"link died mid-request: {exc}") from None
        finally:
            self._expiry.discard(expiry_key, future)
            session.pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # set while we waited on the send: seen, not logged as lost
        if response.code == "busy":
            raise TooManyInFlight(f"{peer.member.name} is busy: {response.error}")
        if response.error is not None:
            raise RequestFailed(response.error)
        return response.body


def _nothing() -> None:
    pass


def log_crash(task: asyncio.Task[None]) -> None:
    """A task that should never fail did: say so loudly instead of losing the error."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task_crashed", task=task.get_coro().__qualname__, exc_info=task.exception())
