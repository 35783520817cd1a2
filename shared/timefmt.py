"""RFC 3339 timestamps for the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(seconds: float) -> str:
    """Wall-clock seconds since the epoch as RFC 3339 UTC with milliseconds."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
