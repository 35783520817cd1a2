"""The small aiohttp edge both programs share: JSON responses, /healthz, the token, start."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL


class TooManyWatchers(Exception):
    """MESH_MAX_WATCHERS (blocking queries and event streams) are held already: 429 at once."""


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    # served only once every listener is up: HTTP starts last
    return json_response({"status": "ok"})


# probes carry no secret: liveness and readiness stay open with a token set
OPEN_PATHS = frozenset(("/healthz", "/readyz"))

# A browser cannot add a header to an EventSource: the distributor's page logs in with a
# form (distributor/page.py), which sets this cookie (HttpOnly, SameSite=Strict). Its value
# is derived from the token (hex, so always a valid cookie value, and the token itself
# never sits in the browser's cookie store).
TOKEN_COOKIE = "mesh_token"
# a program may answer requests without a valid token on some paths itself, instead of the
# JSON 401 (the distributor's page answers a login form): path -> handler
LOGIN_HANDLERS = web.AppKey("login_handlers", Mapping[str, Handler])


class TokenCheck:
    """The HTTP token: the bearer header, Consul's X-Consul-Token or ?token=, or the cookie,
    compared in constant time."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode("utf-8", "surrogateescape")
        self.cookie = hmac.new(self._expected, b"mesh http cookie", hashlib.sha256).hexdigest()

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._expected)

    def authorized(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # the scheme is case-insensitive (RFC 7235)
        if scheme.lower() == "bearer" and self.matches(given.strip()):
            return True
        # Consul's clients send the token as X-Consul-Token or ?token= (DESIGN.md): the
        # same token, wherever the bearer header is accepted
        consul = request.headers.get("X-Consul-Token")
        if consul is not None and self.matches(consul.strip()):
            return True
        query = request.query.get("token")
        if query is not None and self.matches(query):
            return True
        cookie = request.cookies.get(TOKEN_COOKIE)
        return cookie is not None and hmac.compare_digest(
            cookie.encode("utf-8", "surrogateescape"), self.cookie.encode()
        )


# the app's TokenCheck, set by start_http when a token is set (absent: the API is open)
TOKEN_CHECK = web.AppKey("token_check", TokenCheck)


def bearer_token_required(check_token: TokenCheck) -> Any:
    """Every endpoint but the probes needs `Authorization: Bearer <token>` or the cookie."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or check_token.authorized(request):
            return await handler(request)
        login = request.app.get(LOGIN_HANDLERS, {}).get(request.path)
        if login is not None:
            return await login(request)
        return json_response({"error": "a valid bearer token is required"}, 401)

    return check


def _origin_of(url: URL) -> tuple[str, str, int | None] | None:
    if not url.absolute or url.host is None:
        return None
    return url.scheme.lower(), url.host.lower(), url.port


def same_origin(request: web.Request) -> bool:
    """Whether the request's `Origin` header, if any, names the origin it was sent to:
    http (the API has no TLS) and its Host header. No Origin (curl, Prometheus, py-consul)
    is same-origin; `Origin: null` (a sandboxed frame, a file) or one that does not parse
    is not."""
    given = request.headers.get("Origin")
    if given is None:
        return True
    host = request.headers.get("Host")
    if host is None:
        return False
    try:
        origin, own = _origin_of(URL(given.strip())), _origin_of(URL(f"http://{host.strip()}"))
    except ValueError:
        return False
    return origin is not None and origin == own


@web.middleware
async def same_origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a request a browser sent from another origin's page: a web page the operator
    visits must not drive the API (POST /v1/request, PUT /v1/self), with or without the
    token's cookie. First of the middlewares: before the token check and its login form."""
    if same_origin(request):
        return await handler(request)
    return json_response({"error": "cross-origin requests are refused"}, 403)


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    token: str | None = None,
    refuse_cross_origin: bool = True,
) -> web.AppRunner:
    """Serve `app` with /healthz, the token (when set) and, unless `refuse_cross_origin` is False
    (a user-facing port that web pages may call on purpose), the cross-origin refusal."""
    app.router.add_get("/healthz", healthz)
    if refuse_cross_origin:
        app.middlewares.insert(0, same_origin_only)
    if token is not None:
        app[TOKEN_CHECK] = check = TokenCheck(token)
        app.middlewares.append(bearer_token_required(check))
    # a short shutdown: a stopping program must exit within 2 s
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
