"""What both programs show of services: the summary behind GET /v1/services and the
instances behind GET /v1/services/<name>."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.wire import Member


def services_summary(records: Iterable[Member]) -> dict[str, dict[str, Any]]:
    """service name -> its providers counted (draining ones too), its instances and how
    many of them pass, and the union of their tags, in the order first seen; names sorted."""
    summary: dict[str, dict[str, Any]] = {}

    def entry(service: str) -> dict[str, Any]:
        return summary.setdefault(service, {"members": 0, "instances": 0, "passing": 0, "tags": {}})

    for record in records:
        for service in record.services:
            provider = entry(service)
            provider["members"] += 1
            provider["tags"].update(dict.fromkeys(record.tags))
        for instance in record.instances:
            found = entry(instance.service)
            found["instances"] += 1
            found["passing"] += instance.health == "passing"
            found["tags"].update(dict.fromkeys(instance.tags))
    return {name: {**found, "tags": list(found["tags"])} for name, found in sorted(summary.items())}


def service_instances(records: Iterable[Member], service: str) -> list[dict[str, Any]]:
    """The instances of `service`, each with its agent's id (`member`) and name (`node`),
    sorted by agent name, then instance id."""
    found = [
        {**instance.document(), "member": record.id, "node": record.name}
        for record in records
        for instance in record.instances
        if instance.service == service
    ]
    return sorted(found, key=lambda item: (item["node"], item["member"], item["id"]))
