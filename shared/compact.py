"""The compact form of a member record (protocol version 4): an array of its fields by
position, in RECORD_FIELDS order, without the trailing ones that hold their defaults (a
storm sends N^2 of these). A reader turns an array back into the object that names its
fields, so both forms are validated alike (Member.from_wire)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.fields import ProtocolError

if TYPE_CHECKING:
    from shared.records import Member

COMPACT_VERSION = 4  # from this version on, records travel as arrays and deltas in batches

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


def to_array(member: Member) -> list[Any]:
    """`member` in the compact form."""
    record: list[Any] = [
        member.id,
        member.name,
        member.address,
        member.incarnation,
        member.http,
        list(member.services),
        list(member.tags),
        dict(member.meta),
        member.draining,
        [i.to_dict() for i in member.instances],
    ]
    size = len(record)
    while size > 4 and record[size - 1] == _DEFAULTS[size - 1]:
        size -= 1
    del record[size:]
    return record


def array_fields(obj: list[Any]) -> dict[str, Any]:
    """A record in the compact form as the object that names its fields."""
    if not 4 <= len(obj) <= len(RECORD_FIELDS):
        raise ProtocolError(f"a member array has 4..{len(RECORD_FIELDS)} fields")
    return dict(zip(RECORD_FIELDS, obj, strict=False))


__all__ = [
    "COMPACT_VERSION",
    "RECORD_FIELDS",
    "array_fields",
    "to_array",
]
