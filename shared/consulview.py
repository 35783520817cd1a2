"""Consul's HTTP API shapes from a view of the mesh. Pure: no I/O, no clock.

Both programs answer a subset of Consul's HTTP API (DESIGN.md, "Speaking Consul and
DNS"), each from its own view: every member it knows with whether it reaches it (a node:
itself, and its peers while their link is `connected`; the distributor: every registered
member), plus who is answering (`Origin`). shared/consulhttp.py is the thin edge.

The mapping:
- A member is a Consul node: `Node` its name, `ID` its id written as a UUID, `Address` its
  advertise host, `Meta` its meta, `Datacenter` ours.
- Its services: `mesh` (ID `mesh`, at its HTTP address: a Prometheus with Consul
  discovery scrapes every node through it), with its tags and meta, and its instances.
  Python in-process services have no address: they are not here.
- Checks: `serfHealth` for the member (passing while the answering process reaches it,
  else critical); `_node_maintenance` (critical) while it drains, as Consul's node
  maintenance mode, so `?passing` leaves out an agent that routed traffic avoids; then,
  for an instance, one `service:<id>` check with its health (records carry the
  instance's health, not each check's).

Names are matched as Consul matches them: service names and tags case-insensitively.
Entries are sorted by node name (then id), a node's services `mesh` first, then its
instances in the record's order, so equal views give byte-equal answers (the answer's
digest decides its index: AnswerIndexes).
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.wire import Instance, Member, parse_address

# The Consul API version whose shapes these follow: clients that check a version (a
# minimum for a feature) read Config.Version. Config.Revision says it is the mesh.
CONSUL_VERSION = "1.17.0"
MESH_SERVICE = "mesh"
SERF_CHECK = "serfHealth"
MAINTENANCE_CHECK = "_node_maintenance"
# a namespace for ids that are not 32 hex digits (a hand-made record): their UUID is a
# name-based one, the same every time
_ID_NAMESPACE = uuid.UUID("5b0e8a52-6c4e-4e0f-9c1d-6d657368aa01")


@dataclass(frozen=True, slots=True)
class Origin:
    """The process that answers: a node, or the distributor (`server`)."""

    name: str
    id: str
    address: str  # host:port of its mesh port (Consul's serf LAN address)
    http: str  # host:port of its HTTP API: /v1/status/leader
    datacenter: str
    server: bool = False
    meta: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class View:
    """Every member the answering process knows, and whether it reaches it."""

    members: tuple[tuple[Member, bool], ...]
    datacenter: str


@dataclass(frozen=True, slots=True)
class Query:
    """The filters Consul's catalog and health endpoints take."""

    tags: tuple[str, ...] = ()  # ?tag=, repeatable: every one must match
    node_meta: tuple[tuple[str, str], ...] = ()  # ?node-meta=key:value, repeatable: all
    passing: bool = False  # ?passing: only entries whose checks all pass


class Service(NamedTuple):
    """One service of a member as the Consul view shows it: `mesh` or an instance."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]
    health: str | None  # an instance's; None for `mesh` (its member's serfHealth says it)


def node_uuid(member_id: str) -> str:
    """A member id as Consul's node ID: our ids are 32 hex digits, so a UUID with dashes;
    any other id gets a name-based UUID (stable: the same id, the same UUID)."""
    try:
        if len(member_id) == 32:
            return str(uuid.UUID(hex=member_id))
    except ValueError:
        pass
    return str(uuid.uuid5(_ID_NAMESPACE, member_id))


def host_of(address: str) -> str:
    """The host of `host:port` (a record's addresses were checked on the wire)."""
    try:
        return parse_address(address)[0]
    except ValueError:
        return address


def port_of(address: str) -> int:
    try:
        return parse_address(address)[1]
    except ValueError:
        return 0


def services_of(member: Member) -> Iterator[Service]:
    """`mesh` (when the member has an HTTP address), then its instances."""
    if member.http is not None:
        yield Service(
            MESH_SERVICE,
            MESH_SERVICE,
            host_of(member.http),
            port_of(member.http),
            member.tags,
            member.meta,
            None,
        )
    for i in member.instances:
        yield _instance(i)


def _instance(i: Instance) -> Service:
    return Service(i.id, i.service, i.address, i.port, i.tags, i.meta, i.health)


def _ordered(view: View, query: Query) -> list[tuple[Member, bool]]:
    """The members `node-meta` keeps, by name then id."""
    kept = [
        (member, reachable)
        for member, reachable in view.members
        if all(value == dict(member.meta).get(key) for key, value in query.node_meta)
    ]
    return sorted(kept, key=lambda pair: (pair[0].name, pair[0].id))


def _has_tags(service: Service, tags: tuple[str, ...]) -> bool:
    have = {tag.lower() for tag in service.tags}
    return all(tag.lower() in have for tag in tags)


def _entries(view: View, name: str, query: Query) -> Iterator[tuple[Member, bool, Service]]:
    """Every (member, reachable, service) of the service `name` that `query` keeps."""
    wanted = name.lower()
    for member, reachable in _ordered(view, query):
        for service in services_of(member):
            if service.name.lower() == wanted and _has_tags(service, query.tags):
                yield member, reachable, service


# -- the documents ------------------------------------------------------------------


def tagged_addresses(host: str) -> dict[str, str]:
    return {"lan": host, "wan": host}


def catalog_node(member: Member, datacenter: str, index: int) -> dict[str, Any]:
    """A member as Consul's Node (/v1/catalog/nodes, and `Node` in /v1/health/service)."""
    host = host_of(member.address)
    return {
        "ID": node_uuid(member.id),
        "Node": member.name,
        "Address": host,
        "Datacenter": datacenter,
        "TaggedAddresses": tagged_addresses(host),
        "Meta": dict(member.meta),
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def catalog_nodes(view: View, query: Query = Query(), index: int = 0) -> list[dict[str, Any]]:
    """GET /v1/catalog/nodes."""
    return [catalog_node(m, view.datacenter, index) for m, _ in _ordered(view, query)]


def catalog_services(view: View, query: Query = Query()) -> dict[str, list[str]]:
    """GET /v1/catalog/services: every service name -> the union of its tags (sorted, as
    Consul's answer comes out of its index)."""
    tags: dict[str, set[str]] = {}
    for member, _ in _ordered(view, query):
        for service in services_of(member):
            tags.setdefault(service.name, set()).update(service.tags)
    return {name: sorted(tags[name]) for name in sorted(tags)}


def catalog_service(
    view: View, name: str, query: Query = Query(), index: int = 0
) -> list[dict[str, Any]]:
    """GET /v1/catalog/service/<name>: Consul's flat entries, `?tag=` and `node-meta`."""
    entries = []
    for member, _, service in _entries(view, name, query):
        host = host_of(member.address)
        entries.append(
            {
                "ID": node_uuid(member.id),
                "Node": member.name,
                "Address": host,
                "Datacenter": view.datacenter,
                "TaggedAddresses": tagged_addresses(host),
                "NodeMeta": dict(member.meta),
                "ServiceKind": "",
                "ServiceID": service.id,
                "ServiceName": service.name,
                "ServiceTags": list(service.tags),
                "ServiceAddress": service.address,
                "ServiceTaggedAddresses": {},
                "ServiceWeights": {"Passing": 1, "Warning": 1},
                "ServiceMeta": dict(service.meta),
                "ServicePort": service.port,
                "ServiceEnableTagOverride": False,
                "CreateIndex": index,
                "ModifyIndex": index,
            }
        )
    return entries


def _check(
    member: Member,
    check_id: str,
    name: str,
    status: str,
    index: int,
    service: Service | None = None,
    notes: str = "",
    output: str = "",
) -> dict[str, Any]:
    return {
        "Node": member.name,
        "CheckID": check_id,
        "Name": name,
        "Status": status,
        "Notes": notes,
        "Output": output,
        "ServiceID": service.id if service else "",
        "ServiceName": service.name if service else "",
        "ServiceTags": list(service.tags) if service else [],
        "Type": "",
        "Definition": {},
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def member_checks(member: Member, reachable: bool, index: int = 0) -> list[dict[str, Any]]:
    """The checks of the member itself: serfHealth, and node maintenance while it drains."""
    checks = [
        _check(
            member,
            SERF_CHECK,
            "Serf Health Status",
            "passing" if reachable else "critical",
            index,
            output="Agent alive and reachable" if reachable else "Agent not live or unreachable",
        )
    ]
    if member.draining:
        checks.append(
            _check(
                member,
                MAINTENANCE_CHECK,
                "Node Maintenance Mode",
                "critical",
                index,
                notes="draining: leaving the mesh, or taken out of rotation (PUT /v1/self)",
            )
        )
    return checks


def service_checks(
    member: Member, reachable: bool, service: Service, index: int = 0
) -> list[dict[str, Any]]:
    """Every check of one entry of /v1/health/service: the member's, then the instance's."""
    checks = member_checks(member, reachable, index)
    if service.health is not None:
        name = f"Service '{service.name}' check"
        checks.append(_check(member, f"service:{service.id}", name, service.health, index, service))
    return checks


def agent_service(service: Service, datacenter: str, index: int = 0) -> dict[str, Any]:
    """One service as Consul's AgentService (`Service` in /v1/health/service)."""
    return {
        "Kind": "",
        "ID": service.id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Address": service.address,
        "TaggedAddresses": {},
        "Meta": dict(service.meta),
        "Port": service.port,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "Datacenter": datacenter,
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def health_service(
    view: View, name: str, query: Query = Query(), index: int = 0
) -> list[dict[str, Any]]:
    """GET /v1/health/service/<name>: `[{"Node", "Service", "Checks"}]`; with `passing`,
    only the entries whose checks all pass."""
    entries = []
    for member, reachable, service in _entries(view, name, query):
        checks = service_checks(member, reachable, service, index)
        if query.passing and any(c["Status"] != "passing" for c in checks):
            continue
        entries.append(
            {
                "Node": catalog_node(member, view.datacenter, index),
                "Service": agent_service(service, view.datacenter, index),
                "Checks": checks,
            }
        )
    return entries


def agent_self(origin: Origin) -> dict[str, Any]:
    """GET /v1/agent/self: every top-level value an object (clients index into them)."""
    host = host_of(origin.address)
    return {
        "Config": {
            "Datacenter": origin.datacenter,
            "PrimaryDatacenter": origin.datacenter,
            "NodeName": origin.name,
            "NodeID": node_uuid(origin.id),
            "Server": origin.server,
            "Revision": "mesh",
            "Version": CONSUL_VERSION,
        },
        "Member": {
            "Name": origin.name,
            "Addr": host,
            "Port": port_of(origin.address),
            "Tags": {
                "dc": origin.datacenter,
                "id": node_uuid(origin.id),
                "role": "consul" if origin.server else "node",
            },
            "Status": 1,  # serf's "alive"
        },
        "Meta": dict(origin.meta),
    }


def leader(origin: Origin) -> str:
    """GET /v1/status/leader: the answering process's HTTP address (there is no Raft
    leader; a client that asks only wants to know that one is known)."""
    return origin.http


# -- the index of an answer -----------------------------------------------------------


class AnswerIndexes:
    """X-Consul-Index per answer: the index at which each answer last changed.

    `current` is the process's own index (it only rises, and rises whenever its view
    changes). An answer (an endpoint and its query: the key) keeps the index at which
    its digest last changed, so a watcher of one service is not woken by a change of
    another. An answer seen for the first time gets `current` (it may have changed at
    any time before). Kept for the last `limit` keys used; a key dropped and seen again
    starts anew at `current`: at worst one early wake-up, never an index that goes down.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._seen: collections.OrderedDict[Hashable, tuple[bytes, int]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def index(self, key: Hashable, digest: bytes, current: int, advance: Callable[[], int]) -> int:
        """The answer's index now. `advance()` moves the process's index on and returns it:
        called when the answer changed and `current` has not moved since it was last
        seen (a change no notify announced): a new answer always gets a new index."""
        seen = self._seen.get(key)
        if seen is not None and seen[0] == digest:
            self._seen.move_to_end(key)
            return seen[1]
        if seen is not None and seen[1] >= current:
            current = advance()
        self._seen[key] = (digest, current)
        self._seen.move_to_end(key)
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return current
