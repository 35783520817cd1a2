"""What operators' tools read from the distributor: GET /v1/links and GET /v1/sd/prometheus.

/v1/links: the peer links members report they cannot keep up (link_report), between two
registered members: a partial partition the registry cannot see from its own links.

    {"broken": [{"from": id, "to": id, "from_name": ..., "to_name": ..., "state": "retrying",
                 "since": "<RFC 3339>"}]}

/v1/sd/prometheus: Prometheus HTTP service discovery (http_sd_configs): one target group
per member that has an HTTP API, labelled

    mesh_id, mesh_name, mesh_services (",a,b,": a regex can match one), mesh_tags (the
    same), mesh_draining ("true" | "false"), mesh_meta_<key>

A meta key may hold characters a Prometheus label name may not (`zone-a`; one invalid
label makes Prometheus drop every target): each such character becomes `_`, and when two
keys become one label the later one is dropped. `?service=` keeps that service's
providers. The distributor itself is not a target: scrape it with a static config.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from distributor.query import BadQuery, name, single
from distributor.registry import Entry, Registry
from shared.http import json_response
from shared.timefmt import rfc3339
from shared.wire import Member

_NOT_LABEL = re.compile(r"[^A-Za-z0-9_]")


def links_document(registry: Registry) -> dict[str, Any]:
    return {
        "broken": [
            {
                "from": source.member.id,
                "to": target.member.id,
                "from_name": source.member.name,
                "to_name": target.member.name,
                "state": link.state,
                "since": rfc3339(link.since),
            }
            for source, target, link in registry.broken_links()
        ]
    }


def target_labels(member: Member) -> dict[str, str]:
    labels = {
        "mesh_id": member.id,
        "mesh_name": member.name,
        "mesh_services": f",{','.join(member.services)},",
        "mesh_tags": f",{','.join(member.tags)},",
        "mesh_draining": "true" if member.draining else "false",
    }
    for key, value in member.meta:
        labels.setdefault("mesh_meta_" + _NOT_LABEL.sub("_", key), value)  # the first wins
    return labels


def targets_document(entries: list[Entry], service: str | None = None) -> list[dict[str, Any]]:
    return [
        {"targets": [entry.member.http], "labels": target_labels(entry.member)}
        for entry in entries
        if entry.member.http is not None and (service is None or entry.member.provides(service))
    ]


def add_routes(app: web.Application, registry: Registry) -> None:
    async def links(request: web.Request) -> web.Response:
        return json_response(links_document(registry))

    async def prometheus(request: web.Request) -> web.Response:
        try:  # as every endpoint reads it: once, and a name
            service = single(request.query, "service")
            if service is not None:
                name(service, "service")
        except BadQuery as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(targets_document(registry.entries(), service))

    app.router.add_get("/v1/links", links)
    app.router.add_get("/v1/sd/prometheus", prometheus)
