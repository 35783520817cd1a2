"""The gateway: users' HTTP, `<METHOD> /<service>/<rest>`, to a healthy instance of the
service on any member, or to the mesh's in-process (Python) providers.

Which instance: passing ones (warning ones only when none passes) whose agent is this node
or a peer whose link is connected and that is not draining; among them the one with the
fewest requests in flight from here, round-robin among equals (node.routing). A connect
that fails goes to the next instance, TRIES in all; once a request was sent it is never
sent again. Bodies stream both ways: aiohttp's low-level server toward users, node.upstream
toward instances.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from node.errors import RequestFailed
from node.http import failure_response, result_response
from node.routing import TRIES, Agent, ProviderPicker, healthiest, routable_instances
from node.upstream import ConnectFailed, Exchange, Pool, UpstreamError, decoded, request_head
from shared.config import join_address
from shared.http import json_response
from shared.wire import DNS_LABEL, Instance, json_value

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
        "host",  # the instance's address; the user's goes in X-Forwarded-Host
        "expect",  # the gateway answers a 100-continue itself
        "content-length",  # the gateway frames what it sends on
    )
)
# a request whose headers are not complete by then is cut (slowloris): a bounded buffer
# (aiohttp's line and header limits) for a bounded time
HEADER_TIMEOUT = 10.0
CHUNK = 64 * 1024  # a body up to this size of known length goes in one write
FOUND = "mesh_service_found"  # request key: the service had somewhere to go


class GatewayError(Exception):
    """The gateway's own failure, answered as JSON {"error", "service"}."""

    def __init__(self, status: int, message: str, service: str) -> None:
        super().__init__(message)
        self.status = status
        self.service = service


class Gateway:
    def __init__(self, node: Node) -> None:
        self._node = node
        tuning = node.config.tuning
        self._connect_timeout = tuning.connect_timeout
        self._response_timeout = tuning.gateway_timeout
        self._picker = ProviderPicker()
        self._in_flight: dict[str, int] = {}  # instance key -> requests in flight from here
        self._pool = Pool(self._connect_timeout)
        self._site: HeaderDeadlineSite | None = None
        self.stats = node.stats.gateway

    # -- which instance ----------------------------------------------------------

    def candidates(self, service: str) -> dict[str, tuple[Instance, str]]:
        """Instances of `service` that may take a request now (node.routing)."""
        node = self._node
        ours = node.agent.instances(node.advertise_host)
        agents: list[tuple[Agent, bool]] = [(Agent(node.id, node.draining, ours), True)]
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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
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

    async def _route(self, request: web.BaseRequest, service: str) -> web.StreamResponse:
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

    async def _call_python(self, request: web.BaseRequest, service: str) -> web.Response:
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
                body = json_value(raw, "body", ValueError)
            except ValueError as exc:
                raise GatewayError(400, str(exc), service) from None
        try:
            member, result = await self._node.call(None, method, body, service=service)
        except RequestFailed as exc:
            return failure_response(exc)
        return result_response(member, result)

    async def _forward(
        self, request: web.BaseRequest, service: str, key: str, instance: Instance
    ) -> web.StreamResponse:
        exchange = await self._pool.exchange(instance.address, instance.port)  # ConnectFailed
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            try:
                await self._send(request, exchange, instance)
                await exchange.response_head(self._response_timeout)
            except TimeoutError:
                raise GatewayError(
                    504, f"no response from {key} within {self._response_timeout:g} s", service
                ) from None
            except UpstreamError as exc:  # sent, or maybe sent: never again
                raise GatewayError(502, f"{key} closed before answering: {exc}", service) from None
            return await self._relay(request, exchange, key, service)
        finally:
            exchange.release()
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def _send(self, request: web.BaseRequest, exchange: Exchange, instance: Instance) -> None:
        """The request as the user sent it, but hop-by-hop headers: a small body of known
        length with its head in one write, any other streamed (chunked when the user's was)."""
        headers = forwarded_headers(request)
        headers.append(("Host", join_address(instance.address, instance.port)))
        head_only = request.method == "HEAD"
        length = request.content_length
        if not request.body_exists:
            if length == 0:
                headers.append(("Content-Length", "0"))
            exchange.send(request_head(request.method, request.raw_path, headers), head_only)
            return
        if length is not None and length <= CHUNK:
            body = await request.read()
            headers.append(("Content-Length", str(len(body))))
            head = request_head(request.method, request.raw_path, headers)
            exchange.send(head + body, head_only)
            return
        chunked = length is None
        headers.append(
            ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(length))
        )
        exchange.send(request_head(request.method, request.raw_path, headers), head_only)
        async for data in request.content.iter_any():
            exchange.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await exchange.drain()
        if chunked:
            exchange.write(b"0\r\n\r\n")

    async def _relay(
        self, request: web.BaseRequest, exchange: Exchange, key: str, service: str
    ) -> web.StreamResponse:
        """The instance's answer: a small one of known length whole, in one write; any
        other streamed as it comes, so an event stream or a large download is never held
        whole."""
        headers: list[tuple[str, str]] = []
        length: int | None = None
        for name, value in decoded(exchange.headers):
            lower = name.lower()
            if lower == "content-length":
                length = int(value) if value.isdigit() else None
            elif lower not in HOP_BY_HOP:
                headers.append((name, value))
        headers.append(("X-Mesh-Instance", key))
        if length is not None and length <= CHUNK and request.method != "HEAD":
            try:
                body = b"".join([chunk async for chunk in exchange.body()])
            except UpstreamError as exc:
                raise GatewayError(502, f"{key} closed mid-answer: {exc}", service) from None
            response = web.Response(status=exchange.status, reason=exchange.reason, body=body)
            response.headers.extend(headers)
            return response
        response = web.StreamResponse(status=exchange.status, reason=exchange.reason)
        response.headers.extend(headers)
        if length is not None:
            response.content_length = length
        try:
            await response.prepare(request)
            async for chunk in exchange.body():
                await response.write(chunk)
            await response.write_eof()
        except UpstreamError:
            # the instance died mid-answer, after its status was sent: the user must see a
            # cut answer, not a whole one
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:  # the user went away: so does the instance's answer
            if exchange.transport is not None:
                exchange.transport.close()
        return response

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, host: str, port: int) -> web.ServerRunner:
        # aiohttp's low-level server: every path is the gateway's, no router, no middleware
        runner = web.ServerRunner(
            web.Server(self._serve, access_log=None, keepalive_timeout=15.0),
            handle_signals=False,
            shutdown_timeout=0.5,
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

    async def close(self, runner: web.BaseRunner) -> None:
        await runner.cleanup()
        self._pool.close()

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        # the connection's headers came in whole: HeaderDeadlineSite lets it live
        if request.transport is not None and self._site is not None:
            self._site.complete(request.transport)
        return await self.handle(request)


FORWARDED = frozenset(("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"))


def forwarded_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    """The user's headers but hop-by-hop ones (and those `Connection` names), with
    X-Forwarded-For (appended to), X-Forwarded-Host and X-Forwarded-Proto."""
    connection = request.headers.get("Connection")
    named = {t.strip().lower() for t in connection.split(",")} if connection else set()
    headers = [
        (name, value)
        for name, value in request.headers.items()
        if (lower := name.lower()) not in HOP_BY_HOP
        and lower not in named
        and lower not in FORWARDED
    ]
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
    headers.append(("X-Forwarded-Host", request.host))
    headers.append(("X-Forwarded-Proto", request.scheme))
    return headers


class HeaderDeadlineSite(web.TCPSite):
    """A TCP site that closes a connection whose first request's headers are not complete
    within HEADER_TIMEOUT (aiohttp would wait forever): a slowloris costs a bounded buffer
    (aiohttp's line and header limits) for a bounded time. Later requests on a kept-alive
    connection have aiohttp's keep-alive timeout."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int) -> None:
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
