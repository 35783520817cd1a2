"""The distributor's JSON documents, made from the registry as it is when called: the
/v1/members (and event-stream snapshot), /v1/services and /v1/services/<name> bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributor.registry import Entry, Registry
from shared.services import service_instances, services_summary


@dataclass(frozen=True, slots=True)
class Filter:
    service: str | None = None
    tags: tuple[str, ...] = ()

    def matches(self, entry: Entry) -> bool:
        member = entry.member
        if self.service is not None and not member.provides(self.service):
            return False
        return all(tag in member.tags for tag in self.tags)


def members_document(registry: Registry, only: Filter = Filter()) -> dict[str, Any]:
    """The /v1/members body (also the event stream's snapshot)."""
    entries = registry.entries()
    if only.service is not None or only.tags:
        entries = [e for e in entries if only.matches(e)]
    return {
        "epoch": registry.epoch,
        "version": registry.version,
        "members": [e.document() for e in entries],
    }


def services_document(registry: Registry) -> dict[str, Any]:
    """The /v1/services body (shared.services.services_summary: services by name, draining
    providers counted, the union of their tags in the order first seen, providers in
    registration order)."""
    return {
        "epoch": registry.epoch,
        "version": registry.version,
        "services": services_summary(e.member for e in registry.entries()),
    }


def service_document(registry: Registry, service: str) -> dict[str, Any]:
    """The /v1/services/<name> body: its providers, draining ones too, and its instances,
    each with its agent (empty lists if none)."""
    return {
        "epoch": registry.epoch,
        "version": registry.version,
        "service": service,
        "members": [e.document() for e in registry.entries() if e.member.provides(service)],
        "instances": service_instances((e.member for e in registry.entries()), service),
    }
