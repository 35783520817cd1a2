"""The distributor's TCP edge: hello in, one snapshot out, then deltas as others come and go.

A node's registration lasts as long as its link: it ends on TCP close, on
heartbeat silence (a frozen process), on a leave message or on bad input, and
each of those sends member_left, with that reason, to every other node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from distributor.metrics import DistributorStats
from distributor.registry import RegistrationRefused, Registry
from shared.config import Tuning, join_address
from shared.framing import encode_frame
from shared.link import Link
from shared.linkend import EndReason, LinkEnd
from shared.listener import Listener
from shared.looplag import LoopLag
from shared.snapshot import snapshot_frames
from shared.wire import (
    Error,
    Hello,
    Leave,
    LinkReport,
    Member,
    Message,
    ProtocolError,
    Update,
)

log = structlog.get_logger()

# a registration's error code -> mesh_connections_rejected_total's reason
REFUSED = {"full": "members_full", "stale_incarnation": "stale_incarnation"}


class DistributorServer:
    def __init__(
        self,
        registry: Registry,
        tuning: Tuning,
        lag: LoopLag,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.tuning = tuning
        self._on_change = on_change  # the registry's version moved (watchers wake)
        self.address = "0.0.0.0:0"
        self._links: dict[str, tuple[Member, Link]] = {}  # registered member id -> its link
        self.stats = DistributorStats(lag)  # counted here, read by /metrics
        self._listener = Listener(
            tuning, lag, self._hello, self._serve, self.stats.traffic, self.stats.refusals
        )
        self._stopping = False  # while stopping, departures are ours, not the nodes'
        # Deltas not yet written, in version order, flushed with one write per link (a
        # storm of joins would otherwise cost a syscall per join per link). A link
        # registered meanwhile takes only those after its snapshot: id -> first index.
        self._outbox: list[bytes] = []
        self._late: dict[str, int] = {}
        self._next_flush = 0.0  # monotonic time before which a flush waits (see _flush)
        self._flush_timer: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> None:
        self.address = join_address(host, await self._listener.start(host, port))
        log.info("distributor_listening", address=self.address, epoch=self.registry.epoch)

    async def stop(self) -> None:
        """Tell every node we are going (so they retry at once), then close everything."""
        self._stopping = True
        self._flush()
        goodbye = encode_frame(Leave())
        for _, link in self._links.values():
            link.send_nowait(goodbye)
        await self._listener.stop()

    def _hello(self) -> Hello:
        return Hello(id=self.registry.epoch, name="distributor", address=self.address)

    def _broadcast(self, message: Message) -> None:
        """Queue a delta for every link registered now; encoded once, sent at _flush."""
        self._queue(encode_frame(message, self.tuning.max_frame))
        self.stats.events[message.TYPE] += 1
        self._on_change()

    def _queue(self, data: bytes) -> None:
        if self._flush_timer is None:
            delay = max(0.0, self._next_flush - time.monotonic())
            self._flush_timer = asyncio.get_running_loop().call_later(delay, self._flush)
        self._outbox.append(data)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()  # stop() flushes before the timer is due
            self._flush_timer = None
        frames, late = self._outbox, self._late
        self._outbox, self._late = [], {}
        if not frames:
            return
        started = time.monotonic()
        self._write(frames, late)
        # A quiet distributor flushes at once. One whose flush took long is in a storm
        # (joins then come about one per loop iteration): it waits as long again,
        # so each write to a link carries many deltas and flushing takes at most half
        # the time. Deltas stay in version order; only their batching changes.
        ended = time.monotonic()
        self._next_flush = ended + (ended - started)

    def _write(self, frames: list[bytes], late: dict[str, int]) -> None:
        whole = b"".join(frames)  # the same bytes to every link
        count = len(frames)
        for member_id, (_, link) in self._links.items():
            first = late.get(member_id)
            if first is None:
                link.send_nowait(whole, count)
            elif first < count:
                link.send_nowait(b"".join(frames[first:]), count - first)

    def _snapshot(self) -> bytes:
        """The registry now, as frames built from records encoded once per member."""
        return b"".join(self._snapshot_parts())

    def _snapshot_parts(self) -> list[bytes]:
        registry = self.registry
        return snapshot_frames(
            registry.epoch, registry.version, registry.records(), self.tuning.max_frame
        )

    def _send_snapshot(self, link: Link) -> None:
        # not inline in _serve: its frame lives as long as the link, and would hold the
        # snapshot's bytes (O(N) a link, O(N^2) in all in a storm)
        parts = self._snapshot_parts()
        link.send_nowait(b"".join(parts), len(parts))

    async def _serve(self, link: Link, hello: Hello) -> None:
        """One node's registration, for as long as its link lives."""
        member = hello.member
        try:
            joined, replaced = self.registry.register(member, time.time())
        except RegistrationRefused as exc:
            link.log.info("registration_refused", code=exc.code, detail=str(exc))
            self.stats.refusals.rejected[REFUSED.get(exc.code, exc.code)] += 1
            link.send_nowait(Error(exc.code, str(exc)))
            return
        end: LinkEnd | None = None
        registered = member  # what this link has registered: its hello, then its updates
        try:
            if replaced is not None:
                # the entry now belongs to the new link; the old link's end emits nothing
                _, old_link = self._links.pop(member.id)
                old_link.abort()
                link.log.info("registration_replaced", incarnation=member.incarnation)
            self._links[member.id] = (member, link)
            # no await between the snapshot and the broadcast: deltas follow in version order,
            # and this link takes only the deltas queued after its own join
            self._send_snapshot(link)
            self._broadcast(joined)
            self._late[member.id] = len(self._outbox)
            link.log.info(
                "member_joined",
                member=member.name,
                address=member.address,
                incarnation=member.incarnation,
                version=joined.version,
                members=len(self.registry),
            )

            def on_message(message: Message) -> None:
                nonlocal registered
                if isinstance(message, Update):
                    registered = self._update(registered, message.member, link)
                elif isinstance(message, LinkReport):
                    self.registry.report_links(registered.id, message.broken)
                # else: heartbeats (a leave ends serve())

            end = await link.serve(on_message)
        finally:
            self._unregister(registered, link, end)

    def _update(self, registered: Member, member: Member, link: Link) -> Member:
        """A node's new record: sent on as member_joined; returns what is registered now."""
        if member.id != registered.id:
            raise ProtocolError(f"an update for {member.id!r} on the link of {registered.id!r}")
        joined = self.registry.update(member)
        if joined is None:  # not newer: reordered or repeated, never applied
            link.log.info("update_ignored", incarnation=member.incarnation)
            return registered
        self._links[member.id] = (member, link)
        self._broadcast(joined)
        link.log.info(
            "member_updated",
            member=member.name,
            incarnation=member.incarnation,
            services=list(member.services),
            draining=member.draining,
            version=joined.version,
        )
        return member

    def _unregister(self, member: Member, link: Link, end: LinkEnd | None) -> None:
        if self._links.get(member.id, (None, None))[1] is link:
            del self._links[member.id]
        reason = end.reason if end else EndReason.CLOSED
        left = self.registry.unregister(member, reason)
        if left is not None and not self._stopping:
            self._broadcast(left)
            self.stats.departures[reason] += 1
            link.log.info(
                "member_left",
                member=member.name,
                reason=reason,
                detail=end.detail if end else "link closed",
                version=left.version,
                members=len(self.registry),
            )
