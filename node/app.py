"""A node: its identity, its record, its membership, its distributor and peer links and
its handlers; the requests it makes (to a member, or routed by service) are node/calls.py's.

Services build on it in one call and reach each other by service name::

    node.add_service("goods", {"list": list_goods, "get": get_item})
    items = await node.request(service="goods", method="list", body={"page": 1})

`node.handlers.add(method, handler)` adds a single method; `await node.request(to,
method, body, timeout)` calls one member by id or name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from node.agent import Agent
from node.calls import Calls
from node.config import NodeConfig
from node.definitions import ServiceDefinition
from node.handlers import Handler, builtin_handlers
from node.linkreport import LinkReporter
from node.membership import Changes, Membership
from node.mesh import Mesh
from node.metrics import NodeStats
from node.registrar import Registrar
from shared.config import join_address, split_address
from shared.link import Link
from shared.looplag import LoopLag
from shared.tasks import cancel_and_wait
from shared.viewsignal import ViewSignal
from shared.wire import (
    MAX_SERVICES,
    MAX_TAGS,
    Hello,
    LinkReport,
    Member,
    check_record_size,
    labels,
    meta_pairs,
)

log = structlog.get_logger()

WILDCARDS = ("", "0.0.0.0", "::")


class Node:
    def __init__(self, config: NodeConfig, lag: LoopLag) -> None:
        self.config = config
        self.id = uuid.uuid4().hex  # fresh at every start
        self.name = config.name
        self.port = config.port  # the bound port once the listener is up
        self.address = join_address(config.advertise_host or "127.0.0.1", config.port)
        self.http_port: int | None = None  # our HTTP API's port, once it listens
        # what we offer (DESIGN.md, "Services"): changed by PUT /v1/self and add_service
        self.services, self.tags, self.meta = config.services, config.tags, config.meta
        self.draining = False
        tuning = config.tuning
        self.membership = Membership(self.id, tuning.peer_retry_window, tuning.max_members)
        self.handlers = builtin_handlers()
        self.lag = lag
        self.stats = NodeStats()  # counted as things happen, read by /metrics
        self.mesh = Mesh(
            self.membership, self.handlers, tuning, lag, self.hello, self.apply, self.stats
        )
        self.registrar = Registrar(
            list(config.distributors),
            self.membership,
            tuning,
            lag,
            self._register,
            self.apply,
            lambda: self.member,
            self.stats,
        )
        # the view (records, link states) may have changed: the Consul view's watchers look
        # again (node/consul.py)
        self.view_signal = ViewSignal()
        self.mesh.on_link_state = self.view_signal.notify
        # requests to a member or by service, with failover (node/calls.py): the Python API
        # is node.request(...) and node.call(...), as POST /v1/request and the gateway use
        self.calls = Calls(self, self.membership, self.mesh, self.handlers, self.stats, tuning)
        self.request = self.calls.request
        self.call = self.calls.call
        self.resolve = self.calls.resolve
        self._link_reporter = LinkReporter(tuning.heartbeat_timeout)
        self._started = False  # listening: a change of record is announced from then on
        self.log = log.bind(node=self.name, node_id=self.id)
        # services outside our process that we registered and check (--instances-file)
        self.agent = Agent(self._instances_changed)
        for definition in config.instances:
            self.register_instance(definition)

    @property
    def incarnation(self) -> int:
        return self.membership.incarnation

    @property
    def member(self) -> Member:
        return Member(
            self.id,
            self.name,
            self.address,
            self.incarnation,
            http=self.http,
            services=self.services,
            tags=self.tags,
            meta=self.meta,
            draining=self.draining,
            instances=self.agent.instances(self.advertise_host),
        )

    @property
    def advertise_host(self) -> str:
        """The host other nodes dial us at (worked out anew at each registration; our own
        address, so its port may still be 0 before the listener is up)."""
        host = self.address.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def http(self) -> str | None:
        """Where our HTTP API is: the advertised host when it listens on every address."""
        if self.http_port is None:
            return None
        http_host = self.config.http_host
        host = self.advertise_host if http_host in WILDCARDS else http_host
        return join_address(host, self.http_port)

    def hello(self) -> Hello:
        return Hello.of(self.member)

    # -- our record ------------------------------------------------------------

    def update_self(
        self,
        services: Any = None,
        tags: Any = None,
        meta: Any = None,
        draining: Any = None,
    ) -> Member:
        """Replace the given fields of our record (None: keep) and announce it.

        Everything is checked before anything changes (ValueError says what is wrong,
        and nothing is half-applied). As memberlist's UpdateNode: a new incarnation, sent
        to the distributors as an update and to the peers as our own record; a record
        that comes out as it was is returned as it is, announced to no one.
        """
        if draining is not None and not isinstance(draining, bool):
            raise ValueError("draining must be true or false")
        current = self.member
        new = replace(
            current,
            services=self.services
            if services is None
            else labels(services, "services", MAX_SERVICES),
            tags=self.tags if tags is None else labels(tags, "tags", MAX_TAGS),
            meta=self.meta if meta is None else meta_pairs(meta),
            draining=self.draining if draining is None else draining,
        )
        if new == current:  # nothing changed: no new incarnation, nothing to announce
            return current
        new = replace(new, incarnation=self.incarnation + 1)
        check_record_size(new)
        self.services, self.tags, self.meta, self.draining = (
            new.services,
            new.tags,
            new.meta,
            new.draining,
        )
        self._announce(new.incarnation)
        return new

    def _announce(self, incarnation: int) -> None:
        """Our record changed: at a new incarnation, to the distributors as an update and to
        the peers as our own record."""
        self.membership.incarnation = incarnation
        self.registrar.announce()
        self.mesh.announce()
        self.view_signal.notify()
        new = self.member
        self.log.info(
            "record_updated",
            incarnation=new.incarnation,
            services=list(new.services),
            tags=list(new.tags),
            draining=new.draining,
            instances=[f"{i.id}:{i.health}" for i in new.instances],
        )

    def register_instance(self, definition: ServiceDefinition) -> None:
        """Register (or replace) an instance this node checks and announces; ValueError
        when it is one too many or would make our record too large (nothing changes then)."""
        self.agent.check_room(definition)
        extra = self.agent.instances(self.advertise_host, extra=definition)
        check_record_size(replace(self.member, instances=extra))
        self.agent.register(definition)

    def deregister_instance(self, instance_id: str) -> bool:
        """Remove one of our instances; False when we have none by that id."""
        return self.agent.deregister(instance_id)

    def _instances_changed(self) -> None:
        if self._started:  # before, the first hello carries them
            self._announce(self.incarnation + 1)

    def add_service(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """Offer `service`, answering each method with its handler (see node.handlers)."""
        services = labels((*self.services, service), "services", MAX_SERVICES)
        for method, handler in handlers.items():
            self.handlers.add(method, handler)
        if not self._started:  # the first hello carries it
            self.services = services
        else:
            self.update_self(services=services)

    async def _register(self, link: Link) -> Hello:
        """A registration attempt on a fresh connection: a new incarnation, the address anew."""
        self.membership.incarnation += 1
        host = await advertise_host(self.config, local=link.local_host)
        self.address = join_address(host, self.port)
        self.view_signal.notify()  # our record's address may be new
        return self.hello()

    def apply(self, changes: Changes) -> None:
        if changes.refute:  # membership moved us to a newer incarnation (SWIM's refutation)
            self.log.warning("declared_gone_refuted", incarnation=self.incarnation)
        for limit in changes.limits_reached:  # once per episode; every refusal is a metric
            self.log.warning(
                "limit_reached",
                limit=limit,
                max=self.config.tuning.max_members,
                detail=f"{limit} beyond MESH_MAX_MEMBERS are refused until there is room",
            )
        self.mesh.apply(changes)
        if changes:
            self.view_signal.notify()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.port = await self.mesh.start(self.config.host, self.config.port)
        self._started = True
        targets = (*self.config.distributors, *self.config.seeds)
        first = targets[0] if targets else None
        self.address = join_address(await advertise_host(self.config, toward=first), self.port)
        self.log.info("node_listening", address=self.address, peers_port=self.port)

    async def run(self, stop: asyncio.Event) -> None:
        """Register and keep the mesh until `stop` is set, then drain and leave cleanly."""
        tasks = [
            *([asyncio.create_task(self.registrar.run())] if self.config.distributors else []),
            asyncio.create_task(self._housekeeping()),
            asyncio.create_task(self.agent.run()),
        ]
        self.mesh.dial_seeds(self.config.seeds)  # the mesh owns its dialling tasks
        stopping = asyncio.create_task(stop.wait())
        try:
            # these tasks run forever; one that ends is a bug, and the process says so
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()
            await self._drain()
            self.log.info("node_leaving")
            # goodbyes are queued first; cancelling the registrar closes its links (flushing
            # them) and keeps it from registering again while we go
            self.registrar.say_goodbye()
            self.mesh.say_goodbye()
        finally:
            stopping.cancel()
            await cancel_and_wait(tasks)
            await self.mesh.stop()

    async def _drain(self) -> None:
        """Draining first (readiness fails, routed requests go elsewhere), for
        MESH_DRAIN_SECONDS, while links and handlers keep working."""
        seconds = self.config.tuning.drain_seconds
        if seconds <= 0:
            self.draining = True  # /readyz says so while we leave; no one else need hear it
            self.view_signal.notify()
            return
        self.update_self(draining=True)
        self.log.info("node_draining", seconds=seconds)
        await asyncio.sleep(seconds)

    async def _housekeeping(self) -> None:
        """Retry windows that end, and broken peer links to report, checked every second."""
        period = min(1.0, self.config.tuning.peer_retry_window / 10)
        while True:
            await asyncio.sleep(period)
            self.apply(self.membership.expire(time.monotonic()))
            self._report_links()

    def _report_links(self) -> None:
        now = time.time()  # a link's `since` is wall-clock time, as /v1/status shows it
        links = ((i, p.status.state, p.status.since) for i, p in self.mesh.peers.items())
        broken = self._link_reporter.broken(links, now)
        if self._link_reporter.due(broken, now):
            self.registrar.report_links(LinkReport(broken))
            self.log.info("link_report", broken=[link.to for link in broken])

    # -- views -----------------------------------------------------------------

    def readiness(self) -> str | None:
        """Why this node should not get traffic now, or None when it is ready (/readyz)."""
        if self.draining:
            return "draining"
        if self.config.distributors:
            connected = any(d.status.state == "connected" for d in self.registrar.distributors)
            return None if connected else "not registered with any distributor"
        if self.config.seeds and not any(
            p.status.state == "connected" for p in self.mesh.peers.values()
        ):
            return "no peer link up yet"
        return None

    def providers(self, service: str) -> list[dict[str, Any]]:
        """Who provides `service`, as this node sees it: records with their link state."""
        found = [{**self.member.document(), "state": "self"}] if service in self.services else []
        for peer in self.mesh.peers.values():
            if service in peer.member.services:
                found.append({**peer.member.document(), "state": peer.status.state})
        return sorted(found, key=lambda record: (record["name"], record["id"]))

    def records(self) -> list[Member]:
        """Every member we know, ourselves included."""
        return [self.member, *self.membership.members()]

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
            "members": [m.document() for m in members],
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
