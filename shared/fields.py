"""Reading the fields of a decoded JSON object (a frame's body, a record), and the error
a field that does not fit is: the remote side sent something we cannot accept."""

from __future__ import annotations

from typing import Any

MAX_INT = 2**53  # JSON-safe integers


class ProtocolError(Exception):
    """The remote side sent something we cannot accept; close that link only."""


def text_field(obj: dict[str, Any], key: str, limit: int, *, empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string")
    if len(value) > limit or (not empty and not value):
        raise ProtocolError(f"field {key!r} must be 1..{limit} characters")
    return value


def optional_text_field(obj: dict[str, Any], key: str, limit: int) -> str | None:
    return None if obj.get(key) is None else text_field(obj, key, limit, empty=True)


def count_field(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int in Python, never a count on our wire
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_INT:
        raise ProtocolError(f"field {key!r} must be a non-negative integer")
    return value


def seconds_field(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < MAX_INT:
        raise ProtocolError(f"field {key!r} must be a non-negative number")
    return float(value)


def flag_field(obj: dict[str, Any], key: str, default: bool = True) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"field {key!r} must be a boolean")
    return value


__all__ = [
    "MAX_INT",
    "ProtocolError",
    "count_field",
    "flag_field",
    "optional_text_field",
    "seconds_field",
    "text_field",
]
