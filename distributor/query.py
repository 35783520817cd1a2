"""Query parameters both the API (distributor/http.py) and discovery read, one way: a
parameter given twice, or a name that is not one, is a BadQuery, answered with a 400."""

from __future__ import annotations

from multidict import MultiMapping

from shared.wire import LABEL


class BadQuery(ValueError):
    """A query parameter we cannot use; the message says which, for the 400."""


def single(query: MultiMapping[str], key: str) -> str | None:
    """The one value of `key`, or None; BadQuery when it is given more than once (which
    one was meant cannot be guessed)."""
    values = query.getall(key, [])
    if len(values) > 1:
        raise BadQuery(f"{key} is given {len(values)} times; give it once")
    return values[0] if values else None


def name(text: str, what: str) -> str:
    """A service name or tag as shared.wire.LABEL allows; BadQuery otherwise."""
    if not LABEL.fullmatch(text):
        raise BadQuery(f"{what} {text!r} is not a valid name ({LABEL.pattern})")
    return text
