"""The distributor's Consul API (shared/consulhttp.py): the registry's view.

Every registered member is reachable (registered means its link to us is up). The index
is the registry's version + 1 (Consul's indexes start at 1; our versions at 0), so it
moves with every join, leave and update, and a query parked here wakes on the same
VersionWatch as /v1/members' blocking queries. Parked Consul queries count as watchers
with the others (Watchers.parked).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from aiohttp import web

from distributor.http import WATCHERS
from distributor.registry import Registry
from distributor.watch import VersionWatch
from shared.config import ServerConfig, join_address
from shared.consulhttp import ConsulHttp, ConsulSource, add_consul_routes
from shared.consulview import Origin, View

WILDCARDS = ("", "0.0.0.0", "::")


def add_routes(
    app: web.Application,
    registry: Registry,
    watch: VersionWatch,
    config: ServerConfig,
    mesh_address: str,
) -> ConsulHttp:
    """The Consul subset on the distributor's app (after its own routes); `mesh_address`
    is where nodes register (Consul's serf address in agent/self)."""
    watchers = app[WATCHERS]
    datacenter = config.datacenter
    name = socket.gethostname()  # Consul's default node name

    def view() -> View:
        return View(tuple((entry.member, True) for entry in registry.entries()), datacenter)

    def origin(request: web.Request) -> Origin:
        host = config.http_host
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if host in WILDCARDS or sockname is None:
            # every address: the one this request came in on is one that reaches us
            host = str(sockname[0]) if sockname else "127.0.0.1"
        port = int(sockname[1]) if sockname else config.http_port
        http = join_address(host, port)
        return Origin(name, registry.epoch, mesh_address, http, datacenter, server=True)

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        # a parked Consul query is a watcher like a parked /v1/members query: counted in
        # the same place, held to MESH_MAX_WATCHERS with them
        watchers.admit()
        watchers.parked += 1
        try:
            yield
        finally:
            watchers.parked -= 1

    source = ConsulSource(
        datacenter=datacenter,
        view=view,
        origin=origin,
        base_index=lambda: registry.version + 1,
        wait=watch.wait,
        wake=watch.notify,
        hold=hold,
    )
    return add_consul_routes(app, source)
