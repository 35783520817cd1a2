"""The distributor's HTTP API: GET /healthz, GET /v1/members."""

from __future__ import annotations

from aiohttp import web

from distributor.registry import Registry
from shared.http import json_response
from shared.timefmt import rfc3339


def members_document(registry: Registry) -> dict[str, object]:
    return {
        "epoch": registry.epoch,
        "version": registry.version,
        "members": [
            {
                "id": e.member.id,
                "name": e.member.name,
                "address": e.member.address,
                "incarnation": e.member.incarnation,
                "connected_since": rfc3339(e.connected_since),
            }
            for e in registry.entries()
        ],
    }


def make_app(registry: Registry) -> web.Application:
    async def members(request: web.Request) -> web.Response:
        return json_response(members_document(registry))

    app = web.Application()
    app.router.add_get("/v1/members", members)
    return app
