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

PROTOCOL_VERSION = 1  # the version this code speaks
MIN_PROTOCOL_VERSION = 1  # the oldest version it still accepts

MAX_ID = 64
MAX_NAME = 255
MAX_ADDRESS = 300
MAX_METHOD = 128
MAX_TEXT = 1024
MAX_NONCE = 128
MAX_INT = 2**53  # JSON-safe integers
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


def _flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, True)
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


@dataclass(frozen=True, slots=True)
class Member:
    """One node as the mesh knows it."""

    id: str
    name: str
    address: str  # host:port other nodes dial
    incarnation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "incarnation": self.incarnation,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Member:
        if not isinstance(obj, dict):
            raise ProtocolError("a member must be an object")
        return cls(
            id=_text(obj, "id", MAX_ID),
            name=_text(obj, "name", MAX_NAME),
            address=_address(obj, "address"),
            incarnation=_count(obj, "incarnation"),
        )


def _members(obj: dict[str, Any], key: str) -> tuple[Member, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise ProtocolError(f"field {key!r} must be a list")
    return tuple(Member.from_dict(item) for item in value)


# -- messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **self.fields()}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Message:
        return cls()


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First frame on every link: who the sender is and which versions it speaks."""

    TYPE: ClassVar[str] = "hello"
    id: str
    name: str
    address: str
    incarnation: int = 0
    version: int = PROTOCOL_VERSION
    min_version: int = MIN_PROTOCOL_VERSION
    nonce: str = ""  # fresh per connection: the challenge the other side must answer

    @property
    def member(self) -> Member:
        return Member(self.id, self.name, self.address, self.incarnation)

    def fields(self) -> dict[str, Any]:
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
        member = Member.from_dict(obj)  # a hello carries the sender's member record
        return cls(
            **member.to_dict(),
            version=version,
            min_version=min_version,
            nonce=_text(obj, "nonce", MAX_NONCE, empty=True) if "nonce" in obj else "",
        )


def versions_overlap(hello: Hello) -> bool:
    """True when the sender's version range and ours share a version."""
    return hello.min_version <= PROTOCOL_VERSION and MIN_PROTOCOL_VERSION <= hello.version


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """A sign of life; between peers it carries a digest of what the sender knows."""

    TYPE: ClassVar[str] = "heartbeat"
    digest: str = ""  # "count:hash" of the sender's first-hand id:incarnation pairs

    def fields(self) -> dict[str, Any]:
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

    def fields(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "version": self.version,
            "members": [m.to_dict() for m in self.members],
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

    def fields(self) -> dict[str, Any]:
        return {"version": self.version, "member": self.member.to_dict()}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> MemberJoined:
        return cls(version=_count(obj, "version"), member=Member.from_dict(obj.get("member")))


LEAVE_REASONS = ("leave", "closed", "timeout", "protocol")


@dataclass(frozen=True, slots=True)
class MemberLeft(Message):
    TYPE: ClassVar[str] = "member_left"
    version: int
    member: Member
    reason: str = "closed"  # one of LEAVE_REASONS (or a newer distributor's)

    def fields(self) -> dict[str, Any]:
        return {"version": self.version, "member": self.member.to_dict(), "reason": self.reason}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> MemberLeft:
        # a newer distributor may add reasons: kept as text, like an error code
        reason = _text(obj, "reason", 32)
        return cls(
            version=_count(obj, "version"),
            member=Member.from_dict(obj.get("member")),
            reason=reason,
        )


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

    def fields(self) -> dict[str, Any]:
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

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "body": self.body, "error": self.error}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Response:
        return cls(
            id=_count(obj, "id"), body=obj.get("body"), error=_optional_text(obj, "error", MAX_TEXT)
        )


ERROR_CODES = ("unsupported_version", "bad_frame", "auth_failed", "full", "stale_incarnation")


@dataclass(frozen=True, slots=True)
class Error(Message):
    """Sent before closing a link when the peer deserves to know why."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str = ""

    def fields(self) -> dict[str, Any]:
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

    def fields(self) -> dict[str, Any]:
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
        age = obj.get("age")
        if not isinstance(age, int | float) or isinstance(age, bool) or not 0 <= age < MAX_INT:
            raise ProtocolError("field 'age' must be a non-negative number")
        return cls(_text(obj, "id", MAX_ID), _count(obj, "incarnation"), float(age))


@dataclass(frozen=True, slots=True)
class Members(Message):
    """Anti-entropy between peers: the sender's first-hand members and its tombstones."""

    TYPE: ClassVar[str] = "members"
    members: tuple[Member, ...]
    tombstones: tuple[Departure, ...] = ()

    def fields(self) -> dict[str, Any]:
        return {
            "members": [m.to_dict() for m in self.members],
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


def encode(message: Message) -> bytes:
    """The JSON body of one frame (without the length prefix)."""
    return orjson.dumps(message.to_dict())


def decode(body: bytes) -> Message:
    """Parse and validate one frame body; every failure is a ProtocolError."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
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
    "MAX_DEPTH",
    "MESSAGE_TYPES",
    "MIN_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "Auth",
    "Departure",
    "Error",
    "FrameTooLarge",
    "Heartbeat",
    "Hello",
    "Leave",
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
    "decode",
    "encode",
    "nests_too_deeply",
    "versions_overlap",
]
