"""The small aiohttp edge both programs share: JSON responses, /healthz, the token, start."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    # served only once every listener is up: HTTP starts last
    return json_response({"status": "ok"})


# probes carry no secret: liveness and readiness stay open with a token set
OPEN_PATHS = frozenset(("/healthz", "/readyz"))


def bearer_token_required(token: str) -> Any:
    """Every endpoint but the probes needs `Authorization: Bearer <token>`."""
    expected = token.encode("utf-8", "surrogateescape")

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            given_bytes = given.strip().encode("utf-8", "surrogateescape")
            # the scheme is case-insensitive (RFC 7235); the token is compared in constant time
            if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, expected):
                return json_response({"error": "a valid bearer token is required"}, 401)
        return await handler(request)

    return check


async def start_http(
    app: web.Application, host: str, port: int, token: str | None = None
) -> web.AppRunner:
    app.router.add_get("/healthz", healthz)
    if token is not None:
        app.middlewares.append(bearer_token_required(token))
    # a short shutdown: a stopping program must exit within 2 s
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
