"""The distributor's TCP edge: hello in, one snapshot out, then deltas as others come and go.

A node's registration lasts as long as its link: it ends on TCP close, on
heartbeat silence (a frozen process), on a leave message or on bad input, and
each of those sends member_left, with that reason, to every other node.
"""

from __future__ import annotations

import time

import structlog

from distributor.registry import RegistrationRefused, Registry
from shared.config import Tuning, join_address
from shared.connection import Link, LinkEnd, Listener, LoopLag
from shared.framing import encode_frame
from shared.snapshot import split_snapshot
from shared.wire import Error, Hello, Leave, Member, Message

log = structlog.get_logger()


class DistributorServer:
    def __init__(self, registry: Registry, tuning: Tuning, lag: LoopLag) -> None:
        self.registry = registry
        self.tuning = tuning
        self.address = "0.0.0.0:0"
        self._links: dict[str, tuple[Member, Link]] = {}  # registered member id -> its link
        self._listener = Listener(tuning, lag, self._hello, self._serve)
        self._stopping = False  # while stopping, departures are ours, not the nodes'

    async def start(self, host: str, port: int) -> None:
        self.address = join_address(host, await self._listener.start(host, port))
        log.info("distributor_listening", address=self.address, epoch=self.registry.epoch)

    async def stop(self) -> None:
        """Tell every node we are going (so they retry at once), then close everything."""
        self._stopping = True
        goodbye = encode_frame(Leave())
        for _, link in self._links.values():
            link.send_nowait(goodbye)
        await self._listener.stop()

    def _hello(self) -> Hello:
        return Hello(id=self.registry.epoch, name="distributor", address=self.address)

    def _broadcast(self, message: Message, skip: str | None = None) -> None:
        # encoded once; the same bytes go to every link
        data = encode_frame(message, self.tuning.max_frame)
        for member_id, (_, link) in self._links.items():
            if member_id != skip:
                link.send_nowait(data)

    async def _serve(self, link: Link, hello: Hello) -> None:
        """One node's registration, for as long as its link lives."""
        member = hello.member
        try:
            joined, replaced = self.registry.register(member, time.time())
        except RegistrationRefused as exc:
            link.log.info("registration_refused", code=exc.code, detail=str(exc))
            link.send_nowait(Error(exc.code, str(exc)))
            return
        end: LinkEnd | None = None
        try:
            if replaced is not None:
                # the entry now belongs to the new link; the old link's end emits nothing
                _, old_link = self._links.pop(member.id)
                old_link.abort()
                link.log.info("registration_replaced", incarnation=member.incarnation)
            self._links[member.id] = (member, link)
            # no await between the snapshot and the broadcast: deltas follow in version order
            for part in split_snapshot(self.registry.snapshot(), self.tuning.max_frame):
                link.send_nowait(part)
            self._broadcast(joined, skip=member.id)
            link.log.info(
                "member_joined",
                member=member.name,
                address=member.address,
                incarnation=member.incarnation,
                version=joined.version,
                members=len(self.registry),
            )
            end = await link.serve(lambda message: None)  # nodes send only heartbeats and leave
        finally:
            self._unregister(member, link, end)

    def _unregister(self, member: Member, link: Link, end: LinkEnd | None) -> None:
        if self._links.get(member.id, (None, None))[1] is link:
            del self._links[member.id]
        reason = end.reason if end else "closed"
        left = self.registry.unregister(member, reason)
        if left is not None and not self._stopping:
            self._broadcast(left)
            link.log.info(
                "member_left",
                member=member.name,
                reason=reason,
                detail=end.detail if end else "link closed",
                version=left.version,
                members=len(self.registry),
            )
