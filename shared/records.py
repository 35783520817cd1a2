"""Member records and what they carry: services, tags and meta (labels), and instances
(services outside any node's process), each validated, with the size a record may have."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared.addresses import address_field, host_name
from shared.compact import COMPACT_VERSION, array_fields, to_array
from shared.fields import ProtocolError, count_field, flag_field, text_field

MAX_ID = 64
MAX_NAME = 255
MAX_SERVICES = 32
MAX_TAGS = 32
MAX_META = 64
MAX_META_VALUE = 512  # bytes of UTF-8
MAX_RECORD = 8192  # one whole encoded member record
MAX_INSTANCES = 32  # instances one node registers
MAX_RECORD_WITH_INSTANCES = 32768  # a record that carries instances
HEALTH = ("passing", "warning", "critical")  # best first, as Consul's check states
# service names, tags and meta keys
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# an instance's service name is a DNS label, so that DNS can answer for it
DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# an instance's id: unique on its agent, a path segment of /v1/agent/service/deregister/<id>
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def labels(values: Any, what: str, limit: int) -> tuple[str, ...]:
    """A list of service names or tags, checked; ValueError says what is wrong."""
    # a string or a map is iterable too, but never a list of names ({"a": 1} is not ["a"])
    if isinstance(values, str | Mapping) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a list of names")
    values = list(values)
    if len(values) > limit:
        raise ValueError(f"at most {limit} {what}, got {len(values)}")
    for value in values:
        if not isinstance(value, str) or not LABEL.fullmatch(value):
            raise ValueError(f"{what}: {value!r} does not match {LABEL.pattern}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}: a name is listed twice")
    return tuple(values)


def meta_pairs(values: Any) -> tuple[tuple[str, str], ...]:
    """A meta map, checked, as pairs in its order; ValueError says what is wrong."""
    if not isinstance(values, Mapping):
        raise ValueError("meta must be an object of strings")
    if len(values) > MAX_META:
        raise ValueError(f"at most {MAX_META} meta keys, got {len(values)}")
    for key, value in values.items():
        if not isinstance(key, str) or not LABEL.fullmatch(key):
            raise ValueError(f"meta: key {key!r} does not match {LABEL.pattern}")
        if not isinstance(value, str):
            raise ValueError(f"meta: the value of {key!r} must be a string")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_META_VALUE:
            raise ValueError(f"meta: the value of {key!r} is over {MAX_META_VALUE} bytes")
    return tuple(values.items())


@dataclass(frozen=True, slots=True)
class Instance:
    """A service that runs outside any node's process, at an address and port, as its agent
    (the node that registered it and checks it) announces it, with its health."""

    id: str  # unique on its agent
    service: str  # a DNS label
    address: str  # a host name or an IP address
    port: int
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    health: str = "critical"  # HEALTH: Consul's default for a check not yet run

    def to_dict(self) -> dict[str, Any]:
        """The wire form: empty tags and meta left out."""
        item: dict[str, Any] = {
            "id": self.id,
            "service": self.service,
            "address": self.address,
            "port": self.port,
            "health": self.health,
        }
        if self.tags:
            item["tags"] = list(self.tags)
        if self.meta:
            item["meta"] = dict(self.meta)
        return item

    def document(self) -> dict[str, Any]:
        """As the HTTP API shows it: every field, always."""
        return {
            "id": self.id,
            "service": self.service,
            "address": self.address,
            "port": self.port,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "health": self.health,
        }

    @classmethod
    def checked(
        cls,
        id: Any,
        service: Any,
        address: Any,
        port: Any,
        tags: Any = (),
        meta: Any = None,
        health: Any = "critical",
    ) -> Instance:
        """An instance from values of unknown type; ValueError names the field."""
        if not isinstance(service, str) or not DNS_LABEL.fullmatch(service):
            raise ValueError(f"service name {service!r} is not a DNS label ({DNS_LABEL.pattern})")
        if not isinstance(id, str) or not INSTANCE_ID.fullmatch(id):
            raise ValueError(f"instance id {id!r} does not match {INSTANCE_ID.pattern}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port!r}")
        if health not in HEALTH:
            raise ValueError(f"health must be one of {', '.join(HEALTH)}")
        return cls(
            id,
            service,
            host_name(address, "address"),
            port,
            labels(tags, "tags", MAX_TAGS),
            meta_pairs({} if meta is None else meta),
            health,
        )

    @classmethod
    def from_dict(cls, obj: Any) -> Instance:
        if not isinstance(obj, dict):
            raise ValueError("an instance must be an object")
        return cls.checked(
            obj.get("id"),
            obj.get("service"),
            obj.get("address"),
            obj.get("port"),
            obj.get("tags", ()),
            obj.get("meta"),
            obj.get("health"),
        )


def instance_list(values: Any) -> tuple[Instance, ...]:
    """A record's instances, checked: at most MAX_INSTANCES, ids unique."""
    if not isinstance(values, list):
        raise ValueError("instances must be a list")
    if len(values) > MAX_INSTANCES:
        raise ValueError(f"at most {MAX_INSTANCES} instances, got {len(values)}")
    instances = tuple(Instance.from_dict(item) for item in values)
    if len({i.id for i in instances}) != len(instances):
        raise ValueError("instances: an id is listed twice")
    return instances


@dataclass(frozen=True, slots=True)
class Member:
    """One node as the mesh knows it: where to dial it, and what it offers.

    A record never changes within one incarnation: the member bumps its incarnation
    before it announces a new one, so the newer incarnation always wins.
    """

    id: str
    name: str
    address: str  # host:port other nodes dial
    incarnation: int = 0
    http: str | None = None  # host:port of its HTTP API (None from a version-1 node)
    services: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()  # a string map, in its given order
    draining: bool = False  # still a member, but routed requests avoid it
    instances: tuple[Instance, ...] = ()  # services it registered that run outside it

    def to_dict(self) -> dict[str, Any]:
        """The wire form: the version-1 fields, then only what differs from the defaults
        (a storm sends every record to every node)."""
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "incarnation": self.incarnation,
        }
        if self.http is not None:
            record["http"] = self.http
        if self.services:
            record["services"] = list(self.services)
        if self.tags:
            record["tags"] = list(self.tags)
        if self.meta:
            record["meta"] = dict(self.meta)
        if self.draining:
            record["draining"] = True
        if self.instances:
            record["instances"] = [i.to_dict() for i in self.instances]
        return record

    def to_array(self) -> list[Any]:
        """The compact wire form (version 4, shared/compact.py)."""
        return to_array(self)

    def to_wire(self, version: int) -> dict[str, Any] | list[Any]:
        """The record as a peer speaking `version` reads it."""
        return self.to_array() if version >= COMPACT_VERSION else self.to_dict()

    def document(self) -> dict[str, Any]:
        """The record as the HTTP API shows it: every field, always."""
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "incarnation": self.incarnation,
            "http": self.http,
            "services": list(self.services),
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "draining": self.draining,
            "instances": [i.document() for i in self.instances],
        }

    def provides(self, service: str) -> bool:
        return service in self.services

    @classmethod
    def from_wire(cls, obj: Any) -> Member:
        """A record in either wire form, validated alike: an array is read as the object
        that names its fields (RECORD_FIELDS), so its rules are the object's."""
        if isinstance(obj, list):
            obj = array_fields(obj)
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Member:
        if not isinstance(obj, dict):
            raise ProtocolError("a member must be an object")
        member = cls(
            id=text_field(obj, "id", MAX_ID),
            name=text_field(obj, "name", MAX_NAME),
            address=address_field(obj, "address"),
            incarnation=count_field(obj, "incarnation"),
        )
        if len(obj) == 4:  # a version-1 record, or one with nothing more to say
            return member
        try:
            member = cls(
                member.id,
                member.name,
                member.address,
                member.incarnation,
                http=None if obj.get("http") is None else address_field(obj, "http"),
                services=labels(obj.get("services", ()), "services", MAX_SERVICES),
                tags=labels(obj.get("tags", ()), "tags", MAX_TAGS),
                meta=meta_pairs(obj.get("meta", {})),
                draining=flag_field(obj, "draining", default=False),
                instances=instance_list(obj.get("instances", [])),
            )
        except ValueError as exc:
            raise ProtocolError(f"member {member.name!r}: {exc}") from None
        check_record_size(member, ProtocolError)
        return member


def check_record_size(member: Member, error: type[Exception] = ValueError) -> None:
    """One whole encoded record is at most MAX_RECORD bytes (MAX_RECORD_WITH_INSTANCES with
    instances); `error` otherwise."""
    if member.services or member.tags or member.meta or member.instances:
        size = len(orjson.dumps(member.to_dict()))
        limit = MAX_RECORD_WITH_INSTANCES if member.instances else MAX_RECORD
        if size > limit:
            raise error(f"the member record is {size} bytes, over {limit}")


def member_list(obj: dict[str, Any], key: str) -> tuple[Member, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise ProtocolError(f"field {key!r} must be a list")
    return tuple(Member.from_wire(item) for item in value)


__all__ = [
    "DNS_LABEL",
    "HEALTH",
    "INSTANCE_ID",
    "LABEL",
    "MAX_ID",
    "MAX_INSTANCES",
    "MAX_META",
    "MAX_META_VALUE",
    "MAX_NAME",
    "MAX_RECORD",
    "MAX_RECORD_WITH_INSTANCES",
    "MAX_SERVICES",
    "MAX_TAGS",
    "Instance",
    "Member",
    "check_record_size",
    "instance_list",
    "labels",
    "member_list",
    "meta_pairs",
]
