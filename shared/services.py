"""What both programs show of services: the summary behind GET /v1/services."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.wire import Member


def services_summary(records: Iterable[Member]) -> dict[str, dict[str, Any]]:
    """service name -> its providers counted (draining ones too) and the union of their
    tags, in the order first seen; names sorted."""
    summary: dict[str, dict[str, Any]] = {}
    for record in records:
        for service in record.services:
            entry = summary.setdefault(service, {"members": 0, "tags": {}})
            entry["members"] += 1
            entry["tags"].update(dict.fromkeys(record.tags))
    return {
        name: {"members": entry["members"], "tags": list(entry["tags"])}
        for name, entry in sorted(summary.items())
    }
