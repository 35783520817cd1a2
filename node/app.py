"""A node: its identity, its membership, its distributor and peer links, its handlers.

Services build on it through `node.handlers.add(method, handler)` and
`await node.request(to, method, body, timeout)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
import uuid
from typing import Any

import structlog

from node.config import NodeConfig
from node.handlers import (
    AmbiguousName,
    BadRequest,
    RequestFailed,
    RequestTimedOut,
    UnknownMember,
    builtin_handlers,
)
from node.membership import Changes, Membership
from node.mesh import Mesh
from node.registrar import Registrar
from shared.config import join_address, split_address
from shared.connection import Link, LoopLag
from shared.wire import MAX_METHOD, Hello, Member

log = structlog.get_logger()

WILDCARDS = ("", "0.0.0.0", "::")


class Node:
    def __init__(self, config: NodeConfig, lag: LoopLag) -> None:
        self.config = config
        self.id = uuid.uuid4().hex  # fresh at every start
        self.name = config.name
        self.port = config.port  # the bound port once the listener is up
        self.address = join_address(config.advertise_host or "127.0.0.1", config.port)
        tuning = config.tuning
        self.membership = Membership(self.id, tuning.peer_retry_window, tuning.max_members)
        self.handlers = builtin_handlers()
        self.mesh = Mesh(self.membership, self.handlers, tuning, lag, self.hello, self.apply)
        self.registrar = Registrar(
            list(config.distributors), self.membership, tuning, lag, self._register, self.apply
        )
        self.log = log.bind(node=self.name, node_id=self.id)

    @property
    def incarnation(self) -> int:
        return self.membership.incarnation

    @property
    def member(self) -> Member:
        return Member(self.id, self.name, self.address, self.incarnation)

    def hello(self) -> Hello:
        return Hello(id=self.id, name=self.name, address=self.address, incarnation=self.incarnation)

    async def _register(self, link: Link) -> Hello:
        """A registration attempt on a fresh connection: a new incarnation, the address anew."""
        self.membership.incarnation += 1
        host = await advertise_host(self.config, local=link.local_host)
        self.address = join_address(host, self.port)
        return self.hello()

    def apply(self, changes: Changes) -> None:
        if changes.refute:  # membership moved us to a newer incarnation (SWIM's refutation)
            self.log.warning("declared_gone_refuted", incarnation=self.incarnation)
        self.mesh.apply(changes)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.port = await self.mesh.start(self.config.host, self.config.port)
        targets = (*self.config.distributors, *self.config.seeds)
        first = targets[0] if targets else None
        self.address = join_address(await advertise_host(self.config, toward=first), self.port)
        self.log.info("node_listening", address=self.address, peers_port=self.port)

    async def run(self, stop: asyncio.Event) -> None:
        """Register and keep the mesh until `stop` is set, then leave cleanly."""
        tasks = [
            *([asyncio.create_task(self.registrar.run())] if self.config.distributors else []),
            asyncio.create_task(self._expire_forever()),
            *(asyncio.create_task(self.mesh.seed(seed)) for seed in self.config.seeds),
        ]
        stopping = asyncio.create_task(stop.wait())
        try:
            # these tasks run forever; one that ends is a bug, and the process says so
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()
            self.log.info("node_leaving")
            # goodbyes are queued first; cancelling the registrar closes its links (flushing
            # them) and keeps it from registering again while we go
            self.registrar.say_goodbye()
            self.mesh.say_goodbye()
        finally:
            stopping.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.mesh.stop()

    async def _expire_forever(self) -> None:
        period = min(1.0, self.config.tuning.peer_retry_window / 10)
        while True:
            await asyncio.sleep(period)
            self.apply(self.membership.expire(time.monotonic()))

    # -- requests --------------------------------------------------------------

    def resolve(self, to: str) -> str:
        """An id or a name -> the member's id (ourselves included)."""
        if to == self.id or self.membership.get(to) is not None:
            return to
        ids = [m.id for m in self.membership.members() if m.name == to]
        if self.name == to:
            ids.append(self.id)
        if not ids:
            raise UnknownMember(f"no known member has the id or name {to!r}")
        if len(ids) > 1:
            raise AmbiguousName(f"several members are named {to!r}: use the id", ids=sorted(ids))
        return ids[0]

    async def request(self, to: str, method: str, body: Any, timeout: float) -> Any:
        """Call `method` on the member `to` (id or name) and return its result.

        Raises RequestFailed (its `status` is the HTTP code that says why) otherwise.
        """
        if not 0 < len(method) <= MAX_METHOD:
            raise BadRequest(f"'method' must be 1..{MAX_METHOD} characters")
        target = self.resolve(to)
        if target != self.id:
            return await self.mesh.request(target, method, body, timeout)
        try:  # a request to ourselves is answered here
            async with asyncio.timeout(timeout):
                max_result = self.config.tuning.max_frame
                result, error = await self.handlers.answer(method, body, self.member, max_result)
        except TimeoutError:
            raise RequestTimedOut(f"no answer within {timeout} s") from None
        if error is not None:
            raise RequestFailed(error)
        return result

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        members = sorted(self.membership.members(), key=lambda m: (m.name, m.id))
        peers = sorted(self.mesh.peers.values(), key=lambda p: (p.member.name, p.member.id))
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "incarnation": self.incarnation,
            "distributors": [
                {"address": d.address, **d.status.to_dict()} for d in self.registrar.distributors
            ],
            "members": [{"id": m.id, "name": m.name, "address": m.address} for m in members],
            "peers": [
                {
                    "id": p.member.id,
                    "name": p.member.name,
                    "address": p.member.address,
                    **p.status.to_dict(),
                }
                for p in peers
            ],
        }


async def advertise_host(
    config: NodeConfig, toward: str | None = None, local: str | None = None
) -> str:
    """The address other nodes dial (DESIGN.md, --advertise-host), worked out now.

    In order: --advertise-host; --host when it is one specific address (a listener
    bound there is reachable only there); the hostname's address if not loopback
    (a container's address on its network); `local`, the local address of a
    connection just made to a distributor, else the route toward `toward`;
    127.0.0.1. A cut-off container's hostname does not resolve, so a registration
    made as it comes back relies on its live connection's own address.
    """
    if config.advertise_host:
        return config.advertise_host
    if config.host not in WILDCARDS:
        return config.host
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(2.0):
            infos = await loop.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
        for info in infos:
            host = str(info[4][0])
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                return host
    if local is None and toward is not None:
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            host, port = split_address(toward)
            async with asyncio.timeout(2.0):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(sockaddr)  # UDP connect sends nothing; it picks the route
                local = str(probe.getsockname()[0])
    return local or "127.0.0.1"
