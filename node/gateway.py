"""The gateway: users' HTTP, `<METHOD> /<service>/<rest>`, to a healthy instance of the
service on any member, or to the mesh's in-process (Python) providers.

Which instance: passing ones (warning ones only when none passes) whose agent is this node
or a peer whose link is connected and that is not draining; among them the one with the
fewest requests in flight from here, round-robin among equals (node.routing). A connect
that fails goes to the next instance, TRIES in all; once a request was sent it is never
sent again. Bodies stream both ways, through aiohttp's server and client.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from node.errors import RequestFailed
from node.routing import TRIES, ProviderPicker, healthiest, routable_instances
from shared.config import join_address
from shared.http import json_response
from shared.wire import DNS_LABEL, MAX_DEPTH, Instance, nests_too_deeply

if TYPE_CHECKING:
    from node.app import Node

log = structlog.get_logger()

# RFC 9110 7.6.1: a proxy does not pass these on (and neither what `Connection` names)
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",  # the instance's, set by the client; the user's goes in X-Forwarded-Host
    )
)
# a request whose headers are not complete by then is cut (slowloris): a bounded buffer
# (aiohttp's line and header limits) for a bounded time
HEADER_TIMEOUT = 10.0
# idle connections to instances are closed before Node.js's own keep-alive timeout (5 s)
# would close them: a request is never written into a connection the app is closing
POOL_IDLE = 4.0
CHUNK = 64 * 1024
FOUND = "mesh_service_found"  # request key: the service had somewhere to go


class GatewayError(Exception):
    """The gateway's own failure, answered as JSON {"error", "service"}."""

    def __init__(self, status: int, message: str, service: str) -> None:
        super().__init__(message)
        self.status = status
        self.service = service


class ConnectFailed(Exception):
    """Nothing was sent: the next instance may be tried."""


class Gateway:
    def __init__(self, node: Node) -> None:
        self._node = node
        tuning = node.config.tuning
        self._connect_timeout = tuning.connect_timeout
        self._response_timeout = tuning.gateway_timeout
        self._picker = ProviderPicker()
        self._in_flight: dict[str, int] = {}  # instance key -> requests in flight from here
        self._session: aiohttp.ClientSession | None = None
        self._site: HeaderDeadlineSite | None = None
        self.stats = node.stats.gateway

    # -- which instance ----------------------------------------------------------

    def candidates(self, service: str) -> dict[str, tuple[Instance, str]]:
        """Instances of `service` that may take a request now (node.routing)."""
        node = self._node
        agents = [(node.member, True)] if node.member.instances else []
        agents += [
            (peer.member, peer.status.state == "connected")
            for peer in node.mesh.peers.values()
            if peer.member.instances
        ]
        return routable_instances(service, agents)

    def pick(
        self, service: str, candidates: dict[str, tuple[Instance, str]], tried: set[str]
    ) -> tuple[str, Instance] | None:
        """The instance to try next, of `candidates` not yet `tried`."""
        keys = healthiest({k: health for k, (_, health) in candidates.items() if k not in tried})
        key = self._picker.pick(service, {k: self._in_flight.get(k, 0) for k in keys})
        return None if key is None else (key, candidates[key][0])

    # -- the edge ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        service = request.path[1:].partition("/")[0]
        status = 500
        try:
            response = await self._route(request, service)
            status = response.status
            return response
        except GatewayError as exc:
            status = exc.status
            return json_response({"error": str(exc), "service": exc.service}, exc.status)
        finally:
            # only a service that was found gets a label of its own: made-up names do not
            # grow the series
            label = service if request.get(FOUND) else None
            self.stats.done(label, status, time.perf_counter() - started)

    async def _route(self, request: web.Request, service: str) -> web.StreamResponse:
        if not DNS_LABEL.fullmatch(service):
            raise GatewayError(404, "the path must begin with a service name: /<service>/", service)
        if (
            "upgrade" in request.headers.get("Connection", "").lower()
            or "Upgrade" in request.headers
        ):
            raise GatewayError(501, "the gateway does not upgrade connections", service)
        candidates = self.candidates(service)
        if not candidates and self._python_service(service):
            request[FOUND] = True
            return await self._call_python(request, service)
        request[FOUND] = bool(candidates)
        tried: set[str] = set()
        while len(tried) < TRIES:
            chosen = self.pick(service, candidates, tried)
            if chosen is None:
                break
            key, instance = chosen
            tried.add(key)
            try:
                return await self._forward(request, service, key, instance)
            except ConnectFailed as exc:
                log.info("gateway_connect_failed", service=service, instance=key, error=str(exc))
        if tried:
            raise GatewayError(502, f"could not connect to {len(tried)} instance(s)", service)
        raise GatewayError(503, f"no healthy instance of {service!r}", service)

    def _python_service(self, service: str) -> bool:
        return any(service in record.services for record in self._node.records())

    async def _call_python(self, request: web.Request, service: str) -> web.Response:
        """POST /<service>/<method>: a request by service to an in-process provider, with
        /v1/request's choice, retries and status codes."""
        method = request.path[1:].partition("/")[2]
        if request.method != "POST":
            raise GatewayError(
                405, f"{service!r} is a mesh service: POST /{service}/<method>", service
            )
        if not method or "/" in method:
            raise GatewayError(404, f"POST /{service}/<method>, one method name", service)
        raw = await request.read()
        body: Any = {}
        if raw.strip():
            try:
                body = orjson_value(raw)
            except ValueError as exc:
                raise GatewayError(400, str(exc), service) from None
        try:
            member, result = await self._node.call(None, method, body, service=service)
        except RequestFailed as exc:
            response = json_response({"error": str(exc), **exc.extra}, exc.status)
            if exc.member is not None:
                response.headers["X-Mesh-Member"] = exc.member
            return response
        response = json_response(result)
        response.headers["X-Mesh-Member"] = member
        return response

    async def _forward(
        self, request: web.Request, service: str, key: str, instance: Instance
    ) -> web.StreamResponse:
        assert self._session is not None
        url = URL(
            f"http://{join_address(instance.address, instance.port)}{request.raw_path}",
            encoded=True,
        )
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            try:
                async with asyncio.timeout(self._response_timeout):
                    upstream = await self._session.request(
                        request.method,
                        url,
                        headers=forwarded_headers(request),
                        data=request.content if request.body_exists else None,
                        allow_redirects=False,
                    )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise ConnectFailed(str(exc) or type(exc).__name__) from None
            except TimeoutError:
                raise GatewayError(
                    504, f"no response from {key} within {self._response_timeout:g} s", service
                ) from None
            except aiohttp.ClientError as exc:  # sent, or maybe sent: never again
                raise GatewayError(502, f"{key} closed before answering: {exc}", service) from None
            try:
                return await self._relay(request, upstream, key)
            finally:
                upstream.release()
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, key: str
    ) -> web.StreamResponse:
        """The instance's answer: a small one of known length whole, in one write; any
        other streamed as it comes, so an event stream or a large download is never held
        whole."""
        headers = CIMultiDict(
            (name, value)
            for name, value in upstream.headers.items()
            if name.lower() not in HOP_BY_HOP
        )
        headers["X-Mesh-Instance"] = key
        length = upstream.content_length
        if length is not None and length <= CHUNK and request.method != "HEAD":
            try:
                body = await upstream.read()
            except aiohttp.ClientError as exc:
                raise GatewayError(502, f"{key} closed mid-answer: {exc}", "") from None
            del headers["Content-Length"]  # the response sets it from the body
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=body
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except aiohttp.ClientPayloadError:
            # the instance died mid-answer, after its status was sent: the user must see a
            # cut answer, not a whole one
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:  # the user went away: so does the instance's answer
            upstream.close()
        return response

    # -- lifecycle -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._mark_started], client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str, port: int) -> web.AppRunner:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=POOL_IDLE),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            auto_decompress=False,  # bytes pass through as the instance sent them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.5,
            keepalive_timeout=15.0,
        )
        await runner.setup()
        self._site = site = HeaderDeadlineSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await self.close(runner)
            raise
        log.info("gateway_listening", address=join_address(host, port))
        return runner

    async def close(self, runner: web.AppRunner) -> None:
        await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _mark_started(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # the connection's headers came in whole: HeaderDeadlineSite lets it live
        if request.transport is not None and self._site is not None:
            self._site.complete(request.transport)
        return await handler(request)


def orjson_value(raw: bytes) -> Any:
    """A JSON body of any type (a method's body need not be an object); ValueError if not
    JSON or nested too deeply to send on."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if nests_too_deeply(raw, value):
        raise ValueError(f"body nests deeper than {MAX_DEPTH} levels")
    return value


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The user's headers but hop-by-hop ones, with X-Forwarded-For, -Host and -Proto."""
    named = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
    headers: CIMultiDict[str] = CIMultiDict(
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    )
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


class HeaderDeadlineSite(web.TCPSite):
    """A TCP site that closes a connection whose first request's headers are not complete
    within HEADER_TIMEOUT (aiohttp would wait forever): a slowloris costs a bounded buffer
    (aiohttp's line and header limits) for a bounded time. Later requests on a kept-alive
    connection have aiohttp's keep-alive timeout."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        super().__init__(runner, host, port)
        self._deadlines: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}

    def complete(self, transport: asyncio.BaseTransport) -> None:
        """The connection's first request came in whole: no deadline any more."""
        timer = self._deadlines.pop(transport, None)
        if timer is not None:
            timer.cancel()

    def _cut(self, transport: asyncio.BaseTransport) -> None:
        self._deadlines.pop(transport, None)
        log.info("gateway_header_timeout", peer=transport.get_extra_info("peername"))
        transport.close()

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        return _Deadline(server(), self)

    async def start(self) -> None:
        self._runner._reg_site(self)  # what BaseSite.start does
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, reuse_address=self._reuse_address
        )


class _Deadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, with HeaderDeadlineSite's deadline on it."""

    def __init__(self, inner: asyncio.Protocol, site: HeaderDeadlineSite) -> None:
        self._inner, self._site = inner, site
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._site._deadlines[transport] = loop.call_later(
            HEADER_TIMEOUT, self._site._cut, transport
        )
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._site.complete(self._transport)
        self._inner.connection_lost(exc)
