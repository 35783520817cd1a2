"""A node's Consul API (shared/consulhttp.py): from its own view, so it answers while
every distributor is down.

Its view: itself (always reachable) and every member it knows, reachable while their
link is `connected`. Its index: a counter that rises with every change of that view (a
record, a link state), looked at again only after node/app.py's `view_signal` said
something may have changed, and compared, never hashed (a collision cannot hide a change).
Besides the shared endpoints, the agent's own: /v1/agent/services and /v1/agent/checks,
and the register and deregister handlers node/http.py passes in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node.app import Node
from shared.config import join_address
from shared.consulhttp import ConsulHttp, ConsulSource, ParkedCount, add_consul_routes
from shared.consulview import Origin, View
from shared.wire import Member


class ViewCounter:
    """A number (from 1) that rises whenever the node's view differs from the last one
    seen. The view is compared only when the node's signal moved since the last look."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.value = 1
        self._generation = -1  # the signal's generation the last look was at
        self._last: tuple[tuple[Member, bool], ...] | None = None

    def current(self) -> int:
        signal = self._node.view_signal
        if signal.generation != self._generation:
            self._generation = signal.generation
            members = view_members(self._node)
            if members != self._last:
                if self._last is not None:
                    self.value += 1
                self._last = members
        return self.value


def view_members(node: Node) -> tuple[tuple[Member, bool], ...]:
    """Ourselves, then every member we know with whether its link is `connected`."""
    peers = node.mesh.peers
    others = tuple(
        (member, (peer := peers.get(member.id)) is not None and peer.status.state == "connected")
        for member in node.membership.members()
    )
    return ((node.member, True), *others)


def origin(node: Node, request: web.Request) -> Origin:
    """The node as agent/self and status/leader show it."""
    http = node.http
    if http is None:  # not announced yet: where this request came in
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        http = join_address(str(sockname[0]), int(sockname[1])) if sockname else ""
    return Origin(node.name, node.id, node.address, http, node.config.datacenter, meta=node.meta)


def add_routes(
    app: web.Application, node: Node, handlers: Iterable[tuple[str, str, Handler]] = ()
) -> ConsulHttp:
    """The Consul subset on the node's app, with `handlers` (register, deregister)."""
    counter = ViewCounter(node)
    datacenter = node.config.datacenter
    parked = ParkedCount(node.config.tuning.max_watchers)

    def view() -> View:
        return View(view_members(node), datacenter)

    def services() -> dict[str, Any]:
        return node.agent.services_view(node.advertise_host, datacenter)

    def checks() -> dict[str, Any]:
        return node.agent.checks_view(node.name)

    source = ConsulSource(
        datacenter=datacenter,
        view=view,
        origin=lambda request: origin(node, request),
        base_index=counter.current,
        wait=node.view_signal.wait,
        wake=node.view_signal.notify,
        hold=parked.hold,
    )
    # the agent's endpoints read the checker's last outputs, which change between
    # records: built at every request (volatile), their index moved on when they differ
    documents = {"/v1/agent/services": (services, True), "/v1/agent/checks": (checks, True)}
    return add_consul_routes(app, source, documents, handlers)
