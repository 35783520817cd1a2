"""Message types of the mesh protocol and their validated JSON form.

Every frame body is one JSON object with a ``type`` field. The message enum is
only ever appended to (memberlist's rule): a peer speaking a newer protocol may
send types we do not know, and the link decides whether that is an error.
Unknown fields are ignored, so a newer peer may add fields to a known type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from shared.fields import (
    MAX_INT,
    ProtocolError,
    count_field,
    flag_field,
    optional_text_field,
    seconds_field,
    text_field,
)
from shared.jsonbody import MAX_DEPTH, json_object, nests_too_deeply
from shared.records import MAX_ID, Member, member_list

# 2: member records carry http, services, tags, meta, draining; `update`; a response's code.
# A version-1 peer ignores all of that (unknown fields and, from a newer peer, unknown types).
# 3: member records as arrays (their fields by position, see Member.to_wire), and `deltas`:
# consecutive member_joined/member_left in one frame. Sent only to a peer that speaks 3.
# 4: records carry `instances` (services outside the node's process), tenth in the array.
# A version-3 reader refuses an array of ten, so a version-3 peer gets records as objects,
# whose unknown keys it ignores (and single member_joined frames, not `deltas`).
PROTOCOL_VERSION = 4  # the version this code speaks
MIN_PROTOCOL_VERSION = 1  # the oldest version it still accepts

MAX_METHOD = 128
MAX_TEXT = 1024
MAX_NONCE = 128


class FrameTooLarge(ProtocolError):
    """A frame (incoming or about to be sent) is over the size cap."""


class UnknownMessageType(ProtocolError):
    """A well-formed frame of a type this version does not know."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown message type {type_name!r}")
        self.type_name = type_name


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
        version, min_version = count_field(obj, "version"), count_field(obj, "min_version")
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
            nonce=text_field(obj, "nonce", MAX_NONCE, empty=True) if "nonce" in obj else "",
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
        return cls(
            digest=text_field(obj, "digest", MAX_NONCE, empty=True) if "digest" in obj else ""
        )


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
            epoch=text_field(obj, "epoch", MAX_ID),
            version=count_field(obj, "version"),
            members=member_list(obj, "members"),
            last=flag_field(obj, "last"),
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
        return cls(version=count_field(obj, "version"), member=Member.from_wire(obj.get("member")))


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
        reason = text_field(obj, "reason", 32)
        return cls(
            version=count_field(obj, "version"),
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
        first = count_field(obj, "version")
        events = obj.get("events")
        if not isinstance(events, list) or not events:
            raise ProtocolError("field 'events' must be a list of deltas, not empty")
        if first + len(events) > MAX_INT:
            raise ProtocolError("the deltas' versions run past the integer limit")
        return cls(first, tuple(_event(first + i, item) for i, item in enumerate(events)))


def _event(version: int, item: Any) -> Delta:
    if isinstance(item, dict):
        reason = text_field(item, "reason", 32)
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
            id=count_field(obj, "id"),
            method=text_field(obj, "method", MAX_METHOD),
            body=obj.get("body"),
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
            id=count_field(obj, "id"),
            body=obj.get("body"),
            error=optional_text_field(obj, "error", MAX_TEXT),
            code=optional_text_field(obj, "code", 32),
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
        return cls(
            code=text_field(obj, "code", 64),
            message=text_field(obj, "message", MAX_TEXT, empty=True),
        )


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Proof that the sender knows the mesh secret, bound to both sides' hello nonces."""

    TYPE: ClassVar[str] = "auth"
    proof: str

    def fields(self, version: int) -> dict[str, Any]:
        return {"proof": self.proof}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Auth:
        proof = text_field(obj, "proof", MAX_NONCE)
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
        return cls(
            text_field(obj, "id", MAX_ID),
            count_field(obj, "incarnation"),
            seconds_field(obj, "age"),
        )


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
            members=member_list(obj, "members"),
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
        return cls(
            text_field(obj, "to", MAX_ID), text_field(obj, "state", 32), seconds_field(obj, "since")
        )


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


def encode(message: Message, version: int = MIN_PROTOCOL_VERSION) -> bytes:
    """The JSON body of one frame (without the length prefix) for a peer speaking `version`;
    by default in the form every version reads."""
    return orjson.dumps(message.to_dict(version))


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
    "ERROR_CODES",
    "LEAVE_REASONS",
    "MAX_METHOD",
    "MAX_NONCE",
    "MAX_TEXT",
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
    "Leave",
    "LinkReport",
    "MemberJoined",
    "MemberLeft",
    "Members",
    "Message",
    "Request",
    "Response",
    "Snapshot",
    "SyncRequest",
    "UnknownMessageType",
    "Update",
    "decode",
    "delta_event",
    "encode",
    "versions_overlap",
]
