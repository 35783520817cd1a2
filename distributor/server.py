"""The distributor's TCP edge: hello in, one snapshot out, then deltas as others come and go.

A node's registration lasts as long as its link: it ends on TCP close, on
heartbeat silence (a frozen process), on a leave message or on bad input, and
each of those sends member_left, with that reason, to every other node.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import NamedTuple

import structlog

from distributor.metrics import DistributorStats
from distributor.registry import RegistrationRefused, Registry
from shared.config import Tuning, join_address
from shared.framing import encode_frame
from shared.link import Link
from shared.linkend import EndReason, LinkEnd
from shared.listener import Listener
from shared.looplag import LoopLag
from shared.snapshot import deltas_frames, snapshot_frames
from shared.wire import (
    COMPACT_VERSION,
    Delta,
    Error,
    Hello,
    Leave,
    LinkReport,
    Member,
    Message,
    ProtocolError,
    Update,
    delta_event,
)

log = structlog.get_logger()

# a registration's error code -> mesh_connections_rejected_total's reason
REFUSED = {"full": "members_full", "stale_incarnation": "stale_incarnation"}

MAX_FLUSH_DELAY = 0.2  # seconds: the most a flush waits after a slow one (see _flush)


class Outgoing(NamedTuple):
    """One change as a flush writes it, in each wire form, encoded once for every link."""

    frames: bytes  # whole frames, for a link older than version 3
    count: int  # how many
    compact: bytes  # for a version-3 link: whole frames, or a delta's item of a batch
    compact_count: int
    delta: int | None = None  # a delta's version: its item goes out in a `deltas` batch


def compact_writes(outbox: list[Outgoing], max_frame: int) -> tuple[bytes, int]:
    """What a version-3 link gets of `outbox`: each run of deltas as `deltas` frames (one
    unless over the cap), whole frames as they are; the bytes, and how many frames."""
    frames: list[bytes] = []
    count = 0
    for is_delta, items in itertools.groupby(outbox, key=lambda item: item.delta is not None):
        if is_delta:
            run = list(items)
            assert run[0].delta is not None
            batches = deltas_frames(run[0].delta, [item.compact for item in run], max_frame)
            frames += batches
            count += len(batches)
        else:
            for item in items:
                frames.append(item.compact)
                count += item.compact_count
    return b"".join(frames), count


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
        self._links: dict[str, Link] = {}  # registered member id -> its link
        self.stats = DistributorStats(lag)  # counted here, read by /metrics
        self._listener = Listener(
            tuning, lag, self._hello, self._serve, self.stats.traffic, self.stats.refusals
        )
        self._stopping = False  # while stopping, departures are ours, not the nodes'
        self._refusing_members = False  # registrations refused as full since the last room
        # Deltas not yet written, in version order, flushed with one write per link (a
        # storm of joins would otherwise cost a syscall per join per link). A link
        # registered meanwhile gets the list as it is at that flush instead, set done
        # when sent: one snapshot, built once and shared, for all the joins of a flush,
        # so a storm holds O(N) bytes of them, not O(N) a join.
        self._outbox: list[Outgoing] = []
        self._joining: dict[Link, asyncio.Future[None]] = {}
        # the members' compact records (version 3) joined, so a snapshot is bytes copied
        self._next_flush = 0.0  # monotonic time before which a flush waits (see _flush)
        self._flush_timer: asyncio.TimerHandle | None = None
        # links whose output was over the transport's high-water mark at the last flush:
        # while any is, changes are batched (a storm's snapshots are what backs them up)
        self._backed_up = 0

    async def start(self, host: str, port: int) -> None:
        self.address = join_address(host, await self._listener.start(host, port))
        log.info("distributor_listening", address=self.address, epoch=self.registry.epoch)

    async def stop(self) -> None:
        """Tell every node we are going (so they retry at once), then close everything."""
        self._stopping = True
        self._flush()
        goodbye = encode_frame(Leave())
        for link in self._links.values():
            link.send_nowait(goodbye)
        await self._listener.stop()

    def _hello(self) -> Hello:
        return Hello(id=self.registry.epoch, name="distributor", address=self.address)

    def _broadcast(self, delta: Delta) -> None:
        """Queue a delta for every link registered now; encoded once a form, sent at _flush."""
        frame = encode_frame(delta, self.tuning.max_frame)
        self._queue(Outgoing(frame, 1, delta_event(delta), 1, delta.version))
        self.stats.events[delta.TYPE] += 1
        self._on_change()

    def _queue(self, data: Outgoing) -> None:
        """Adaptive coalescing: written at once when nothing is pending (no flush waits, the
        last flush was quick and left no link backed up), as a bare broadcaster would;
        else it joins the flush that waits, or one timed as _flush says."""
        self._outbox.append(data)
        if self._flush_timer is not None:
            return  # a flush is pending: this change goes out with it
        delay = self._next_flush - time.monotonic()
        if delay <= 0 and not self._backed_up:
            self._flush()
            return
        self._flush_timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._flush)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()  # stop() flushes before the timer is due
            self._flush_timer = None
        outbox, joining = self._outbox, self._joining
        self._outbox, self._joining = [], {}
        if not outbox:  # a join always queues its delta, so no one is joining either
            return
        started = time.monotonic()
        self._write(outbox, joining)
        for sent in joining.values():
            if not sent.done():  # cancelled when its link was stopped meanwhile
                sent.set_result(None)
        # A quiet distributor flushes at once. One whose flush took long is in a storm
        # (joins then come about one per loop iteration): it waits as long again,
        # so each write to a link carries many deltas and flushing takes at most half
        # the time. Deltas stay in version order; only their batching changes. Capped,
        # so one stalled flush (a GC pause) does not hold the next change for as long.
        ended = time.monotonic()
        self._next_flush = ended + min(ended - started, MAX_FLUSH_DELAY)

    def _write(self, outbox: list[Outgoing], joining: dict[Link, asyncio.Future[None]]) -> None:
        # the same bytes to every link of a form; made only if some link needs that form
        deltas: dict[bool, tuple[bytes, int]] = {}
        snapshots: dict[bool, tuple[bytes, int]] = {}
        backed_up = 0
        for link in self._links.values():
            if link.backed_up:
                backed_up += 1
            compact = link.peer_version >= COMPACT_VERSION
            if joining and link in joining:
                if compact not in snapshots:
                    snapshots[compact] = self._joining_writes(outbox, compact)
                link.write_now(*snapshots[compact])
                continue
            if compact not in deltas:
                deltas[compact] = self._writes(outbox, compact)
            link.write_now(*deltas[compact])
        self._backed_up = backed_up

    def _joining_writes(self, outbox: list[Outgoing], compact: bool) -> tuple[bytes, int]:
        """What a link registered since the last flush gets: the registry as it is now, as
        the outbox's deltas are all in it, then the outbox's whole frames (the naive
        bench's lists, sent to every link)."""
        parts = self._snapshot_parts(compact)
        whole, count = self._writes([item for item in outbox if item.delta is None], compact)
        return b"".join((*parts, whole)), len(parts) + count

    def _writes(self, outbox: list[Outgoing], compact: bool) -> tuple[bytes, int]:
        if compact:
            return compact_writes(outbox, self.tuning.max_frame)
        return b"".join(item.frames for item in outbox), sum(item.count for item in outbox)

    def _snapshot(self) -> Outgoing:
        """The registry now, in both forms, as frames of records encoded once per member."""
        old, compact = self._snapshot_parts(False), self._snapshot_parts(True)
        return Outgoing(b"".join(old), len(old), b"".join(compact), len(compact))

    def _snapshot_parts(self, compact: bool) -> list[bytes]:
        registry, max_frame = self.registry, self.tuning.max_frame
        if compact:
            return registry.compact_snapshot_frames(max_frame)
        return snapshot_frames(registry.epoch, registry.version, registry.records(), max_frame)

    async def _serve(self, link: Link, hello: Hello) -> None:
        """One node's registration, for as long as its link lives."""
        snapshot_sent = self._register(link, hello.member)
        if snapshot_sent is None:
            return
        registered = hello.member  # what this link has registered: its hello, then updates
        end: LinkEnd | None = None
        gone = False

        def depart(end: LinkEnd | None) -> None:
            # once: as the link finds its end (its on_end), or when serve() is left
            nonlocal gone
            if not gone:
                gone = True
                self._unregister(registered, link, end)

        try:
            await snapshot_sent  # serve() beats only after it: the snapshot comes first

            def on_message(message: Message) -> None:
                nonlocal registered
                if isinstance(message, Update):
                    registered = self._update(registered, message.member, link)
                elif isinstance(message, LinkReport):
                    self.registry.report_links(registered.id, message.broken)
                # else: heartbeats (a leave ends serve())

            # the departure goes out from the callback that found it, as a bare
            # broadcaster's would, not a loop iteration later when this task wakes
            link.on_end = depart
            end = await link.serve(on_message)
        finally:
            link.on_end = None
            depart(end)

    def _register(self, link: Link, member: Member) -> asyncio.Future[None] | None:
        """Register and queue the join; done when the next flush has sent the link its
        snapshot. None (logged, the error sent) when the registry refuses."""
        try:
            joined, replaced = self.registry.register(member, time.time())
        except RegistrationRefused as exc:
            self.stats.refusals.rejected[REFUSED.get(exc.code, exc.code)] += 1
            if exc.code != "full":
                link.log.info("registration_refused", code=exc.code, detail=str(exc))
            elif not self._refusing_members:
                # once per episode (a full registry's newcomers retry for ever: a line per
                # attempt would flood the log); every refusal is counted all the same
                self._refusing_members = True
                link.log.warning("limit_reached", limit="members", size=self.registry.max_members)
            link.send_nowait(Error(exc.code, str(exc)))
            return None
        if replaced is None:  # a newcomer found room: an episode of refusals is over
            self._refusing_members = False
        if replaced is not None:
            # the entry now belongs to the new link; the old link's end emits nothing
            old_link = self._links.pop(member.id)
            old_link.abort()
            link.log.info("registration_replaced", incarnation=member.incarnation)
        self._links[member.id] = link
        # the snapshot is owed before the join goes out: that may be at once (_queue)
        snapshot_sent = self._joining[link] = asyncio.get_running_loop().create_future()
        self._broadcast(joined)
        link.log.info(
            "member_joined",
            member=member.name,
            address=member.address,
            incarnation=member.incarnation,
            version=joined.version,
            members=len(self.registry),
        )
        return snapshot_sent

    def _update(self, registered: Member, member: Member, link: Link) -> Member:
        """A node's new record: sent on as member_joined; returns what is registered now."""
        if member.id != registered.id:
            raise ProtocolError(f"an update for {member.id!r} on the link of {registered.id!r}")
        joined = self.registry.update(member)
        if joined is None:  # not newer: reordered or repeated, never applied
            link.log.info("update_ignored", incarnation=member.incarnation)
            return registered
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
        if self._links.get(member.id) is link:
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
