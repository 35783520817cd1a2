"""The node's HTTP API: GET /healthz, GET /v1/status, POST /v1/request."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from node.app import Node
from node.handlers import BadRequest, RequestFailed
from shared.http import json_response
from shared.wire import MAX_DEPTH, nests_too_deeply

MAX_TIMEOUT = 300.0


def parse_request(raw: bytes, default_timeout: float) -> tuple[str, str, Any, float]:
    """A /v1/request body -> (to, method, body, timeout); BadRequest says what is wrong."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    if nests_too_deeply(raw, doc):  # its request frame could not be written
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
    to, method = doc.get("to"), doc.get("method")
    if not isinstance(to, str) or not to:
        raise BadRequest("'to' must be a member's id or name")
    if not isinstance(method, str) or not method:
        raise BadRequest("'method' must be a non-empty string")
    timeout = doc.get("timeout", default_timeout)
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise BadRequest(f"'timeout' must be a number of seconds, 0 < t <= {MAX_TIMEOUT:g}")
    return to, method, doc.get("body", {}), float(timeout)


def make_app(node: Node) -> web.Application:
    max_frame = node.config.tuning.max_frame

    async def status(request: web.Request) -> web.Response:
        return json_response(node.status())

    async def post_request(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_frame:
            return json_response({"error": f"body is over the frame cap ({max_frame})"}, 413)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_response({"error": f"body is over the frame cap ({max_frame})"}, 413)
        try:
            to, method, body, timeout = parse_request(raw, node.config.tuning.request_timeout)
            result = await node.request(to, method, body, timeout)
        except RequestFailed as exc:  # BadRequest included: every failure carries its status
            return json_response({"error": str(exc), **exc.extra}, exc.status)
        return json_response(result)

    # one byte over the cap is enough to refuse; the request frame itself is checked again
    app = web.Application(client_max_size=max_frame + 1)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/request", post_request)
    return app
