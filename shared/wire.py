"""Message types of the mesh protocol and their validated JSON form.

Every frame body is one JSON object with a ``type`` field. The message enum is
only ever appended to (memberlist's rule): a peer speaking a newer protocol may
send types we do not know, and the link decides whether that is an error.
Unknown fields are ignored, so a newer peer may add fields to a known type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

# 2: member records carry http, services, tags, meta, draining; `update`; a response's code.
# A version-1 peer ignores all of that (unknown fields and, from a newer peer, unknown types).
# 3: member records as arrays (their fields by position, see Member.to_wire), and `deltas`:
# consecutive member_joined/member_left in one frame. Sent only to a peer that speaks 3.
# 4: records carry `instances` (services outside the node's process), tenth in the array.
# A version-3 reader refuses an array of ten, so a version-3 peer gets records as objects,
# whose unknown keys it ignores (and single member_joined frames, not `deltas`).
PROTOCOL_VERSION = 4  # the version this code speaks
MIN_PROTOCOL_VERSION = 1  # the oldest version it still accepts
COMPACT_VERSION = 4  # from this version on, records travel as arrays and deltas in batches

MAX_ID = 64
MAX_NAME = 255
MAX_ADDRESS = 300
MAX_METHOD = 128
MAX_TEXT = 1024
MAX_NONCE = 128
MAX_INT = 2**53  # JSON-safe integers
MAX_SERVICES = 32
MAX_TAGS = 32
MAX_META = 64
MAX_META_VALUE = 512  # bytes of UTF-8
MAX_RECORD = 8192  # one whole encoded member record
MAX_INSTANCES = 32  # instances one node registers
MAX_RECORD_WITH_INSTANCES = 32768  # a record that carries instances
MAX_HOST = 253  # a host name (RFC 1035) or an IP address
HEALTH = ("passing", "warning", "critical")  # best first, as Consul's check states
# service names, tags and meta keys
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# an instance's service name is a DNS label, so that DNS can answer for it
DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# an instance's id: unique on its agent, a path segment of /v1/agent/service/deregister/<id>
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# orjson reads JSON nested up to 1024 levels but writes only 254: a frame is refused past
# that, so whatever we accept we can also send on (an echo's answer, an HTTP response)
MAX_DEPTH = 254


class ProtocolError(Exception):
    """The remote side sent something we cannot accept; close that link only."""


class FrameTooLarge(ProtocolError):
    """A frame (incoming or about to be sent) is over the size cap."""


class UnknownMessageType(ProtocolError):
    """A well-formed frame of a type this version does not know."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown message type {type_name!r}")
        self.type_name = type_name


# -- field validation -------------------------------------------------------


def _text(obj: dict[str, Any], key: str, limit: int, *, empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string")
    if len(value) > limit or (not empty and not value):
        raise ProtocolError(f"field {key!r} must be 1..{limit} characters")
    return value


def _optional_text(obj: dict[str, Any], key: str, limit: int) -> str | None:
    return None if obj.get(key) is None else _text(obj, key, limit, empty=True)


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int in Python, never a count on our wire
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_INT:
        raise ProtocolError(f"field {key!r} must be a non-negative integer")
    return value


def _seconds(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < MAX_INT:
        raise ProtocolError(f"field {key!r} must be a non-negative number")
    return float(value)


def _flag(obj: dict[str, Any], key: str, default: bool = True) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"field {key!r} must be a boolean")
    return value


def is_port(text: str, *, zero: bool = False) -> bool:
    """A TCP port in ASCII digits: 1..65535, or 0 too when `zero` (listen anywhere)."""
    return text.isascii() and text.isdigit() and (0 if zero else 1) <= int(text) < 65536


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError when malformed.

    An IPv6 host must be bracketed, or its last group would read as the port.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or "[" in host or "]" in host:
            raise ValueError(f"{text!r} is not HOST:PORT")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"{text!r} is not HOST:PORT (bracket an IPv6 host: [::1]:9010)")
    if not sep or not host or not is_port(port):
        raise ValueError(f"{text!r} is not HOST:PORT")
    try:
        host.encode("idna")  # what the resolver will need: labels of 1..63 characters
    except UnicodeError:
        raise ValueError(f"{text!r} has a host name no resolver accepts") from None
    return host, int(port)


def _address(obj: dict[str, Any], key: str) -> str:
    value = _text(obj, key, MAX_ADDRESS)
    try:
        parse_address(value)
    except ValueError:
        raise ProtocolError(f"field {key!r} must be host:port") from None
    return value


# -- records ----------------------------------------------------------------


def labels(values: Any, what: str, limit: int) -> tuple[str, ...]:
    """A list of service names or tags, checked; ValueError says what is wrong."""
    if isinstance(values, str) or not isinstance(values, Iterable):
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


def host_name(value: Any, what: str) -> str:
    """A host to dial (a name or an IP address, no port); ValueError says what is wrong."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_HOST:
        raise ValueError(f"{what} must be a host name or an IP address")
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not host or any(c.isspace() or c in "/[]@?#" for c in host):
        raise ValueError(f"{what} {value!r} is not a host name or an IP address")
    try:
        host.encode("idna")  # what the resolver will need: labels of 1..63 characters
    except UnicodeError:
        raise ValueError(f"{what} {value!r} has a host name no resolver accepts") from None
    return host


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
        """The compact wire form (version 4): the fields by position, in RECORD_FIELDS order,
        without the trailing ones that hold their defaults (a storm sends N^2 of these)."""
        record: list[Any] = [
            self.id,
            self.name,
            self.address,
            self.incarnation,
            self.http,
            list(self.services),
            list(self.tags),
            dict(self.meta),
            self.draining,
            [i.to_dict() for i in self.instances],
        ]
        size = len(record)
        while size > 4 and record[size - 1] == _DEFAULTS[size - 1]:
            size -= 1
        del record[size:]
        return record

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
            if not 4 <= len(obj) <= len(RECORD_FIELDS):
                raise ProtocolError(f"a member array has 4..{len(RECORD_FIELDS)} fields")
            obj = dict(zip(RECORD_FIELDS, obj, strict=False))
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Member:
        if not isinstance(obj, dict):
            raise ProtocolError("a member must be an object")
        member = cls(
            id=_text(obj, "id", MAX_ID),
            name=_text(obj, "name", MAX_NAME),
            address=_address(obj, "address"),
            incarnation=_count(obj, "incarnation"),
        )
        if len(obj) == 4:  # a version-1 record, or one with nothing more to say
            return member
        try:
            member = cls(
                member.id,
                member.name,
                member.address,
                member.incarnation,
                http=None if obj.get("http") is None else _address(obj, "http"),
                services=labels(obj.get("services", ()), "services", MAX_SERVICES),
                tags=labels(obj.get("tags", ()), "tags", MAX_TAGS),
                meta=meta_pairs(obj.get("meta", {})),
                draining=_flag(obj, "draining", default=False),
                instances=instance_list(obj.get("instances", [])),
            )
        except ValueError as exc:
            raise ProtocolError(f"member {member.name!r}: {exc}") from None
        check_record_size(member, ProtocolError)
        return member


# the compact form's positions, and what each holds when left out
RECORD_FIELDS = (
    "id",
    "name",
    "address",
    "incarnation",
    "http",
    "services",
    "tags",
    "meta",
    "draining",
    "instances",  # version 4
)
_DEFAULTS: tuple[Any, ...] = (None, None, None, None, None, [], [], {}, False, [])


def check_record_size(member: Member, error: type[Exception] = ValueError) -> None:
    """One whole encoded record is at most MAX_RECORD bytes (MAX_RECORD_WITH_INSTANCES with
    instances); `error` otherwise."""
    if member.services or member.tags or member.meta or member.instances:
        size = len(orjson.dumps(member.to_dict()))
        limit = MAX_RECORD_WITH_INSTANCES if member.instances else MAX_RECORD
        if size > limit:
            raise error(f"the member record is {size} bytes, over {limit}")


def _members(obj: dict[str, Any], key: str) -> tuple[Member, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise ProtocolError(f"field {key!r} must be a list")
    return tuple(Member.from_wire(item) for item in value)


# -- messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[str] = ""

    def fields(self, version: int) -> dict[str, Any]:
        """The body's fields as a peer speaking `version` reads them."""
        return {}

    def to_dict(self, version: int = MIN_PROTOCOL_VERSION) -> dict[str, Any]:
        return {"type": self.TYPE, **self.fields(version)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Message:
        return cls()


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First frame on every link: who the sender is and which versions it speaks.

    It carries the sender's whole member record (a distributor's: id, name, address).
    """

    TYPE: ClassVar[str] = "hello"
    id: str
    name: str
    address: str
    incarnation: int = 0
    version: int = PROTOCOL_VERSION
    min_version: int = MIN_PROTOCOL_VERSION
    nonce: str = ""  # fresh per connection: the challenge the other side must answer
    # the full record; left out, it is the one the fields above make
    record: Member | None = None

    def __post_init__(self) -> None:
        if self.record is None:
            member = Member(self.id, self.name, self.address, self.incarnation)
            object.__setattr__(self, "record", member)

    @classmethod
    def of(cls, member: Member) -> Hello:
        return cls(member.id, member.name, member.address, member.incarnation, record=member)

    @property
    def member(self) -> Member:
        assert self.record is not None  # set by __post_init__
        return self.record

    def fields(self, version: int) -> dict[str, Any]:
        return {
            "version": self.version,
            "min_version": self.min_version,
            **self.member.to_dict(),
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Hello:
        version, min_version = _count(obj, "version"), _count(obj, "min_version")
        if min_version > version:
            raise ProtocolError("min_version is above version")
        # a hello carries the sender's member record; its own fields are not the record's
        record = {k: v for k, v in obj.items() if k not in _HELLO_ONLY}
        member = Member.from_dict(record)
        return cls(
            member.id,
            member.name,
            member.address,
            member.incarnation,
            version=version,
            min_version=min_version,
            nonce=_text(obj, "nonce", MAX_NONCE, empty=True) if "nonce" in obj else "",
            record=member,
        )


_HELLO_ONLY = frozenset(("type", "version", "min_version", "nonce"))


def versions_overlap(hello: Hello) -> bool:
    """True when the sender's version range and ours share a version."""
    return hello.min_version <= PROTOCOL_VERSION and MIN_PROTOCOL_VERSION <= hello.version


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """A sign of life; between peers it carries a digest of what the sender knows."""

    TYPE: ClassVar[str] = "heartbeat"
    digest: str = ""  # "count:hash" of the sender's first-hand id:incarnation pairs

    def fields(self, version: int) -> dict[str, Any]:
        return {"digest": self.digest} if self.digest else {}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Heartbeat:
        return cls(digest=_text(obj, "digest", MAX_NONCE, empty=True) if "digest" in obj else "")


@dataclass(frozen=True, slots=True)
class Snapshot(Message):
    """The registry's full member list; large lists go out in parts, the last marked."""

    TYPE: ClassVar[str] = "snapshot"
    epoch: str
    version: int
    members: tuple[Member, ...]
    last: bool = True

    def fields(self, version: int) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "version": self.version,
            "members": [m.to_wire(version) for m in self.members],
            "last": self.last,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Snapshot:
        return cls(
            epoch=_text(obj, "epoch", MAX_ID),
            version=_count(obj, "version"),
            members=_members(obj, "members"),
            last=_flag(obj, "last"),
        )


@dataclass(frozen=True, slots=True)
class MemberJoined(Message):
    TYPE: ClassVar[str] = "member_joined"
    version: int
    member: Member

    def fields(self, version: int) -> dict[str, Any]:
        return {"version": self.version, "member": self.member.to_wire(version)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> MemberJoined:
        return cls(version=_count(obj, "version"), member=Member.from_wire(obj.get("member")))


LEAVE_REASONS = ("leave", "closed", "timeout", "protocol")


@dataclass(frozen=True, slots=True)
class MemberLeft(Message):
    TYPE: ClassVar[str] = "member_left"
    version: int
    member: Member
    reason: str = "closed"  # one of LEAVE_REASONS (or a newer distributor's)

    def fields(self, version: int) -> dict[str, Any]:
        return {
            "version": self.version,
            "member": self.member.to_wire(version),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> MemberLeft:
        # a newer distributor may add reasons: kept as text, like an error code
        reason = _text(obj, "reason", 32)
        return cls(
            version=_count(obj, "version"),
            member=Member.from_wire(obj.get("member")),
            reason=reason,
        )


Delta = MemberJoined | MemberLeft


def _event_form(delta: Delta) -> Any:
    """One delta as an item of a `deltas` batch (version 3): a joined member is its record
    array; a departure, {"left": record, "reason": ...}. Its version is its place in the batch."""
    if isinstance(delta, MemberJoined):
        return delta.member.to_array()
    return {"left": delta.member.to_array(), "reason": delta.reason}


def delta_event(delta: Delta) -> bytes:
    """A delta's item of a `deltas` batch, encoded (the distributor joins these)."""
    return orjson.dumps(_event_form(delta))


@dataclass(frozen=True, slots=True)
class Deltas(Message):
    """Consecutive deltas in one frame (version 3): the first has `version`, the next one
    more, and so on. A reader takes them one by one (shared/framing.py), as if each had
    come in its own frame."""

    TYPE: ClassVar[str] = "deltas"
    version: int
    events: tuple[Delta, ...]

    def fields(self, version: int) -> dict[str, Any]:
        return {"version": self.version, "events": [_event_form(e) for e in self.events]}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Deltas:
        first = _count(obj, "version")
        events = obj.get("events")
        if not isinstance(events, list) or not events:
            raise ProtocolError("field 'events' must be a list of deltas, not empty")
        if first + len(events) > MAX_INT:
            raise ProtocolError("the deltas' versions run past the integer limit")
        return cls(first, tuple(_event(first + i, item) for i, item in enumerate(events)))


def _event(version: int, item: Any) -> Delta:
    if isinstance(item, dict):
        reason = _text(item, "reason", 32)
        return MemberLeft(version, Member.from_wire(item.get("left")), reason)
    return MemberJoined(version, Member.from_wire(item))


@dataclass(frozen=True, slots=True)
class Leave(Message):
    """The sender is going away on purpose (a clean shutdown)."""

    TYPE: ClassVar[str] = "leave"


@dataclass(frozen=True, slots=True)
class Request(Message):
    TYPE: ClassVar[str] = "request"
    id: int  # correlation id, unique per link and direction
    method: str
    body: Any = None

    def fields(self, version: int) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "body": self.body}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Request:
        return cls(
            id=_count(obj, "id"), method=_text(obj, "method", MAX_METHOD), body=obj.get("body")
        )


@dataclass(frozen=True, slots=True)
class Response(Message):
    """The answer to a request: a body, or an error in a few words (never both)."""

    TYPE: ClassVar[str] = "response"
    id: int
    body: Any = None
    error: str | None = None
    # why it failed, in one word, where the caller acts on it: "busy" (the callee's
    # in-flight limit; no handler ran, so a routed request may go elsewhere)
    code: str | None = None

    def fields(self, version: int) -> dict[str, Any]:
        fields = {"id": self.id, "body": self.body, "error": self.error}
        if self.code is not None:
            fields["code"] = self.code
        return fields

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Response:
        return cls(
            id=_count(obj, "id"),
            body=obj.get("body"),
            error=_optional_text(obj, "error", MAX_TEXT),
            code=_optional_text(obj, "code", 32),
        )


ERROR_CODES = ("unsupported_version", "bad_frame", "auth_failed", "full", "stale_incarnation")


@dataclass(frozen=True, slots=True)
class Error(Message):
    """Sent before closing a link when the peer deserves to know why."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str = ""

    def fields(self, version: int) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Error:
        # an unknown code from a newer peer is still worth logging, so it is kept as text
        return cls(code=_text(obj, "code", 64), message=_text(obj, "message", MAX_TEXT, empty=True))


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Proof that the sender knows the mesh secret, bound to both sides' hello nonces."""

    TYPE: ClassVar[str] = "auth"
    proof: str

    def fields(self, version: int) -> dict[str, Any]:
        return {"proof": self.proof}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Auth:
        proof = _text(obj, "proof", MAX_NONCE)
        if len(proof) != 64 or not all(c in "0123456789abcdef" for c in proof):
            raise ProtocolError("an auth proof is 64 lowercase hex digits")
        return cls(proof=proof)


@dataclass(frozen=True, slots=True)
class Departure:
    """A tombstone as it travels: this id, up to this incarnation, has left."""

    id: str
    incarnation: int
    age: float  # seconds since it was first made; hearing it again does not refresh it

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "incarnation": self.incarnation, "age": self.age}

    @classmethod
    def from_dict(cls, obj: Any) -> Departure:
        if not isinstance(obj, dict):
            raise ProtocolError("a tombstone must be an object")
        return cls(_text(obj, "id", MAX_ID), _count(obj, "incarnation"), _seconds(obj, "age"))


@dataclass(frozen=True, slots=True)
class Members(Message):
    """Anti-entropy between peers: the sender's first-hand members and its tombstones."""

    TYPE: ClassVar[str] = "members"
    members: tuple[Member, ...]
    tombstones: tuple[Departure, ...] = ()

    def fields(self, version: int) -> dict[str, Any]:
        return {
            "members": [m.to_wire(version) for m in self.members],
            "tombstones": [t.to_dict() for t in self.tombstones],
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Members:
        tombstones = obj.get("tombstones", [])
        if not isinstance(tombstones, list):
            raise ProtocolError("field 'tombstones' must be a list")
        return cls(
            members=_members(obj, "members"),
            tombstones=tuple(Departure.from_dict(t) for t in tombstones),
        )


@dataclass(frozen=True, slots=True)
class Update(Message):
    """A node's new record (services, tags, meta, draining) at a newer incarnation, to its
    distributors, which send it on as member_joined (an upsert). Version 2."""

    TYPE: ClassVar[str] = "update"
    member: Member

    def fields(self, version: int) -> dict[str, Any]:
        return {"member": self.member.to_wire(version)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Update:
        return cls(member=Member.from_wire(obj.get("member")))


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """A peer link the sender cannot keep up: to whom, its state, since when (unix time)."""

    to: str
    state: str  # the peer's link state: connecting | retrying
    since: float

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "state": self.state, "since": self.since}

    @classmethod
    def from_dict(cls, obj: Any) -> BrokenLink:
        if not isinstance(obj, dict):
            raise ProtocolError("a broken link must be an object")
        return cls(_text(obj, "to", MAX_ID), _text(obj, "state", 32), _seconds(obj, "since"))


@dataclass(frozen=True, slots=True)
class LinkReport(Message):
    """A node tells its distributors which members it cannot reach (peer links down for
    longer than the heartbeat timeout): the whole set, sent when it changes. Version 2."""

    TYPE: ClassVar[str] = "link_report"
    broken: tuple[BrokenLink, ...] = ()

    def fields(self, version: int) -> dict[str, Any]:
        return {"broken": [link.to_dict() for link in self.broken]}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> LinkReport:
        broken = obj.get("broken")
        if not isinstance(broken, list):
            raise ProtocolError("field 'broken' must be a list")
        return cls(tuple(BrokenLink.from_dict(item) for item in broken))


@dataclass(frozen=True, slots=True)
class SyncRequest(Message):
    """Our digests differ: please send your full Members."""

    TYPE: ClassVar[str] = "sync_request"


# Append only: the wire enum of a deployed protocol never loses or renames a type.
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Heartbeat,
        Snapshot,
        MemberJoined,
        MemberLeft,
        Leave,
        Request,
        Response,
        Error,
        Auth,
        Members,
        SyncRequest,
        Update,  # version 2
        LinkReport,  # version 2
        Deltas,  # version 3
    )
}


def nests_too_deeply(raw: bytes, value: Any) -> bool:
    """True when `value`, parsed from `raw`, nests deeper than MAX_DEPTH (orjson cannot
    write it again). Counting brackets first keeps the common case to two memchr passes."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


def encode(message: Message, version: int = MIN_PROTOCOL_VERSION) -> bytes:
    """The JSON body of one frame (without the length prefix) for a peer speaking `version`;
    by default in the form every version reads."""
    return orjson.dumps(message.to_dict(version))


def json_object(raw: bytes, what: str, error: type[Exception]) -> dict[str, Any]:
    """`raw` as one JSON object (a frame's body, an HTTP body); `error` says what is wrong."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise error(f"{what} is not a JSON object")
    return obj


def decode(body: bytes) -> Message:
    """Parse and validate one frame body; every failure is a ProtocolError."""
    obj = json_object(body, "frame", ProtocolError)
    if nests_too_deeply(body, obj):
        raise ProtocolError(f"frame nests deeper than {MAX_DEPTH} levels")
    type_name = obj.get("type")
    if not isinstance(type_name, str):
        raise ProtocolError("frame has no string 'type'")
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise UnknownMessageType(type_name[:64])
    return cls.from_dict(obj)


__all__ = [
    "COMPACT_VERSION",
    "MAX_DEPTH",
    "MESSAGE_TYPES",
    "MIN_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "Auth",
    "BrokenLink",
    "Delta",
    "Deltas",
    "Departure",
    "Error",
    "FrameTooLarge",
    "Heartbeat",
    "Hello",
    "Instance",
    "Leave",
    "LinkReport",
    "Member",
    "MemberJoined",
    "MemberLeft",
    "Members",
    "Message",
    "ProtocolError",
    "Request",
    "Response",
    "Snapshot",
    "SyncRequest",
    "UnknownMessageType",
    "Update",
    "check_record_size",
    "decode",
    "delta_event",
    "encode",
    "labels",
    "meta_pairs",
    "nests_too_deeply",
    "versions_overlap",
]
