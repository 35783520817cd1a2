"""Reading a JSON body (a frame's, an HTTP request's) as one object or as any value, and
whether a parsed value nests too deeply to be written again."""

from __future__ import annotations

from typing import Any

import orjson

# orjson reads JSON nested up to 1024 levels but writes only 254: a frame is refused past
# that, so whatever we accept we can also send on (an echo's answer, an HTTP response)
MAX_DEPTH = 254


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


def json_object(raw: bytes, what: str, error: type[Exception]) -> dict[str, Any]:
    """`raw` as one JSON object (a frame's body, an HTTP body); `error` says what is wrong."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise error(f"{what} is not a JSON object")
    return obj


def json_value(raw: bytes, what: str, error: type[Exception]) -> Any:
    """`raw` as any JSON value that can be sent on (not nested past MAX_DEPTH: a method's
    body); `error` says what is wrong."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{what} is not JSON: {exc}") from None
    if nests_too_deeply(raw, value):
        raise error(f"{what} nests deeper than {MAX_DEPTH} levels")
    return value


__all__ = [
    "MAX_DEPTH",
    "json_object",
    "json_value",
    "nests_too_deeply",
]
