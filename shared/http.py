"""The small aiohttp edge both programs share: JSON responses, /healthz, start and stop."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    # served only once every listener is up: HTTP starts last
    return json_response({"status": "ok"})


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    app.router.add_get("/healthz", healthz)
    # a short shutdown: a stopping program must exit within 2 s
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
