"""Distributor links: register, follow the snapshot and deltas, retry forever.

One task per --distributor. While none answers the node keeps dialling with
backoff (state 1); once registered it applies the snapshot and the deltas
(state 2); when the link dies the peer links stay up and the node goes back to
dialling, re-registering with a fresh incarnation when it returns (state 3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from node.linkstatus import LinkStatus
from node.membership import Changes, Membership
from node.metrics import NodeStats
from node.reconnect import DISTRIBUTOR, keep_linked
from shared.backoff import Backoff
from shared.config import Tuning, split_address
from shared.link import Link, open_link
from shared.linkend import EndReason, LinkDown, LinkEnd, refused
from shared.looplag import LoopLag
from shared.snapshot import SnapshotAssembler
from shared.wire import (
    Error,
    Hello,
    Leave,
    LinkReport,
    Member,
    MemberJoined,
    MemberLeft,
    Message,
    ProtocolError,
    Snapshot,
    Update,
)

log = structlog.get_logger()


@dataclass(eq=False)
class DistributorLink:
    """One --distributor as /v1/status shows it."""

    address: str  # as given on the command line
    # connecting | connected | disconnected
    status: LinkStatus = field(default_factory=lambda: LinkStatus("disconnected"))


class Registrar:
    def __init__(
        self,
        addresses: list[str],
        membership: Membership,
        tuning: Tuning,
        lag: LoopLag,
        hello: Callable[[Link], Awaitable[Hello]],
        on_changes: Callable[[Changes], None],
        record: Callable[[], Member],
        stats: NodeStats | None = None,
    ) -> None:
        self.distributors = [DistributorLink(address) for address in addresses]
        self.stats = NodeStats() if stats is None else stats
        self.membership = membership
        self.tuning = tuning
        self.lag = lag
        self._hello = hello  # a fresh registration (new incarnation, current address)
        self._on_changes = on_changes
        self._record = record  # our member record now
        self._links: dict[str, Link] = {}  # connected distributor address -> link
        # connected distributor address -> the incarnation of the record it has from us
        self._told: dict[str, int] = {}
        self._report = LinkReport()  # our broken peer links, as last reported

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for distributor in self.distributors:
                group.create_task(self._keep_registered(distributor))

    def announce(self) -> None:
        """Send our record to every connected distributor that has an older one (an update,
        sent on as member_joined). A version-1 distributor knows no updates: it keeps the
        record of our last registration."""
        record = self._record()
        for address, link in self._links.items():
            if self._told.get(address, record.incarnation) < record.incarnation:
                if link.peer_version >= 2:
                    link.send_nowait(Update(record))
                self._told[address] = record.incarnation

    def report_links(self, report: LinkReport) -> None:
        """Our broken peer links to every connected distributor (version 2 knows the
        message); kept, so one that registers later hears it too."""
        self._report = report
        for link in self._links.values():
            if link.peer_version >= 2:
                link.send_nowait(report)

    def say_goodbye(self) -> None:
        """Queue a leave to every connected distributor (it sends member_left 'leave').

        The links close, flushing it, when run() is cancelled.
        """
        for link in self._links.values():
            link.send_nowait(Leave())

    async def _keep_registered(self, distributor: DistributorLink) -> None:
        dlog = log.bind(distributor=distributor.address)
        host, port = split_address(distributor.address)

        async def follow(registration: tuple[Link, Member, Snapshot]) -> LinkEnd:
            return await self._follow(distributor, dlog, *registration)

        await keep_linked(
            lambda: self._register(host, port),
            follow,
            DISTRIBUTOR,
            backoff=Backoff(self.tuning.retry_base, self.tuning.retry_max),
            status=distributor.status,
            log=dlog,
            retries=self.stats.retries,
        )

    async def _register(self, host: str, port: int) -> tuple[Link, Member, Snapshot]:
        """Dial, say hello, and wait for the whole snapshot within the handshake timeout."""
        link = await open_link(host, port, self.tuning, self.lag, self.stats.distributor_traffic)
        try:
            hello = await self._hello(link)
            deadline = asyncio.get_running_loop().time() + self.tuning.handshake_timeout
            await link.handshake(hello, dialer=True)
            assembler = SnapshotAssembler(self.tuning.max_members)
            while True:
                message = await link.receive(deadline)
                if isinstance(message, Error):  # e.g. stale_incarnation, full
                    raise refused(message)
                if not isinstance(message, Snapshot):
                    raise LinkDown(
                        LinkEnd(EndReason.PROTOCOL, f"expected snapshot, got {message.TYPE}")
                    )
                snapshot = assembler.add(message)
                if snapshot is not None:
                    self.stats.events["snapshot"] += 1
                    return link, hello.member, snapshot
        except ProtocolError as exc:  # e.g. a snapshot over our MESH_MAX_MEMBERS
            await link.close()
            raise LinkDown(LinkEnd(EndReason.PROTOCOL, str(exc))) from None
        except BaseException:
            await link.close()
            raise

    async def _follow(
        self,
        distributor: DistributorLink,
        dlog: structlog.typing.FilteringBoundLogger,
        link: Link,
        registered: Member,
        snapshot: Snapshot,
    ) -> LinkEnd:
        """Registered: apply the snapshot, then the deltas until the link ends."""
        address = distributor.address
        distributor.status.succeeded()
        dlog.info(
            "registered",
            epoch=snapshot.epoch,
            version=snapshot.version,
            members=len(snapshot.members),
        )

        def on_message(message: Message) -> None:
            if isinstance(message, MemberJoined | MemberLeft):
                self.stats.events[message.TYPE] += 1
                changes = self.membership.apply_delta(address, message, time.monotonic())
                self._on_changes(changes)

        self._links[address] = link
        self._told[address] = registered.incarnation
        try:
            self.announce()  # our record changed while we registered: this one is news too
            if self._report.broken and link.peer_version >= 2:
                link.send_nowait(self._report)
            self._on_changes(self.membership.apply_snapshot(address, snapshot))
            end = await link.serve(on_message)
        finally:
            self._links.pop(address, None)
            self._told.pop(address, None)
            self.membership.distributor_lost(address)
            await link.close()
        distributor.status.set("disconnected", end.detail)
        dlog.warning("distributor_lost", reason=end.reason, detail=end.detail)
        return end
