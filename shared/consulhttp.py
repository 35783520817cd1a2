"""The Consul HTTP API subset's edge, shared by both programs (DESIGN.md, "Speaking Consul
and DNS"). The answers themselves are shared/consulview.py's, from the view each program
plugs in (`ConsulSource`).

    GET /v1/agent/self                   both
    GET /v1/catalog/services             both
    GET /v1/catalog/service/<name>       both: ?tag= (repeatable), ?node-meta=
    GET /v1/catalog/nodes                both: ?node-meta=
    GET /v1/health/service/<name>        both: ?passing, ?tag=, ?node-meta=
    GET /v1/status/leader                both
    + a node's agent endpoints (node/consul.py), registered through `add_consul_routes`

Every answer carries `X-Consul-Index`, `X-Consul-KnownLeader: true` and
`X-Consul-LastContact: 0`. The index of an answer is the process's index (the source's
`base_index`, which rises at every change of its view) when that answer last changed
(consulview.AnswerIndexes): a watcher of one service sleeps through changes of another.

Blocking queries, as Consul's: `?index=N&wait=<Go duration>` answers once the answer's
index passes N, else after the wait (at most 300 s; 5 minutes when not given, or 0, as
Consul). At once when N is 0, or above the process's index (it restarted: indexes started
over). A parked query is a watcher (`ConsulSource.hold`), costs one waiting future and is
looked at again at each notify of its source, never polled; on shutdown it answers now.

Refused as Consul refuses: a `dc` other than ours is a 500 `No path to datacenter`;
`filter` a 400 (not supported here); a bad `index`, `wait` or `passing` a 400. Other
parameters Consul allows (`stale`, `consistent`, `cached`, `near`, `pretty`, `ns`...) are
accepted and change nothing. A path under Consul's prefixes that is not served is
Consul's plain-text 404; the mesh's own API (/v1/members, /v1/status...) is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiMapping

from shared import consulview
from shared.consulview import AnswerIndexes, Origin, Query, View
from shared.goduration import parse_go_duration
from shared.http import TooManyWatchers

MAX_WAIT = 300.0  # seconds: a longer wait is cut to this (DESIGN.md)
DEFAULT_WAIT = 300.0  # with an index and no wait: Consul's 5 minutes
MAX_INDEX = 2**64 - 1  # Consul's indexes are uint64
# Consul's API areas: a path under one that is not served is Consul's 404, not ours
PREFIXES = tuple(
    f"/v1/{area}/"
    for area in (
        "acl agent catalog health status kv session event query coordinate operator connect"
        " config discovery-chain internal peering namespace namespaces partition partitions"
        " exported-services imported-services txn snapshot lock"
    ).split()
)
EXACT = ("/v1/txn", "/v1/snapshot")  # Consul endpoints with no sub-path
_TRUE = ("", "1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool, and no value
_FALSE = ("0", "f", "F", "false", "FALSE", "False")

Build = Callable[[View, int], Any]  # the answer from the view, with its index in entries


class BadConsulQuery(ValueError):
    """A parameter Consul would refuse; the message is the plain-text 400's body."""


@dataclass(frozen=True, slots=True)
class Blocking:
    index: int | None = None  # None or 0: answer at once
    wait: float = DEFAULT_WAIT


def parse_blocking(query: MultiMapping[str]) -> Blocking:
    """`index` (a uint64) and `wait` (a Go duration); BadConsulQuery says which is wrong."""
    index_text, wait_text = query.get("index"), query.get("wait")
    index = None
    if index_text is not None:
        if not index_text.isascii() or not index_text.isdigit() or int(index_text) > MAX_INDEX:
            raise BadConsulQuery(f"Invalid index: {index_text!r} is not a whole number >= 0")
        index = int(index_text)
    wait = DEFAULT_WAIT
    if wait_text is not None:
        try:
            seconds = parse_go_duration(wait_text, "wait") / 1e9
        except ValueError as exc:
            raise BadConsulQuery(f"Invalid wait time: {exc}") from None
        if seconds > 0:  # Consul takes 0 as "not given"
            wait = min(seconds, MAX_WAIT)
    return Blocking(index, wait)


def parse_query(query: MultiMapping[str]) -> Query:
    """`tag` (repeatable), `node-meta` (repeatable `key:value`) and `passing`."""
    passing = query.get("passing")
    if passing is not None and passing not in _TRUE and passing not in _FALSE:
        raise BadConsulQuery(f"Invalid value for ?passing: {passing!r}")
    meta = tuple(item.partition(":")[::2] for item in query.getall("node-meta", []))
    return Query(tuple(query.getall("tag", [])), meta, passing in _TRUE)


def is_consul_path(path: str) -> bool:
    return path.startswith(PREFIXES) or path in EXACT


def _text(body: str, status: int) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain")


class Clock:
    """The process's X-Consul-Index: its source's base index (at least 1, only rising),
    plus the steps `advance()` took for answers that changed with no notify."""

    def __init__(self, base: Callable[[], int]) -> None:
        self._base = base
        self._extra = 0

    def now(self) -> int:
        return max(1, self._base()) + self._extra

    def advance(self) -> int:
        self._extra += 1
        return self.now()


class ParkedCount:
    """Parked queries held now, at most `limit` (a program without watchers of its own)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parked = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.parked >= self.limit:
            raise TooManyWatchers(f"too many watchers: {self.limit} are held already")
        self.parked += 1
        try:
            yield
        finally:
            self.parked -= 1


@dataclass(frozen=True)
class ConsulSource:
    """What a program plugs in: its view, who it is, its index and its wake-ups."""

    datacenter: str
    view: Callable[[], View]  # every member it knows, and whether it reaches it
    origin: Callable[[web.Request], Origin]  # the answering process (for agent/self...)
    base_index: Callable[[], int]  # rises with every change of the view; never goes down
    wait: Callable[[float], Awaitable[object]]  # until the view may have changed, or timeout
    wake: Callable[[], None]  # wake every waiter (on shutdown)
    # held while a query is parked: it counts as a watcher; TooManyWatchers when full
    hold: Callable[[], contextlib.AbstractContextManager[None]] = field(
        default_factory=lambda: ParkedCount().hold  # a count of its own for each source
    )


class ConsulHttp:
    """The routes' shared state: the clock, the answers' indexes and their encodings."""

    def __init__(self, source: ConsulSource) -> None:
        self.source = source
        self.clock = Clock(source.base_index)
        self.indexes = AnswerIndexes()
        self.closing = False
        self._at = 0  # the clock's value the cached view and answers belong to
        self._view: View | None = None
        # key -> (its index, its body once encoded): at most one build per change and key,
        # whatever the number of watchers woken
        self._answers: dict[Hashable, tuple[int, bytes | None]] = {}

    def view(self) -> View:
        self._sync()
        if self._view is None:
            self._view = self.source.view()
        return self._view

    def _sync(self) -> None:
        now = self.clock.now()
        if now != self._at:
            self._at, self._view = now, None
            self._answers.clear()

    def answer_index(self, key: Hashable, build: Build, volatile: bool = False) -> int:
        """The answer's index now (built and digested once per change of the clock, or
        every time when `volatile`: an answer that is not a function of the view alone)."""
        self._sync()
        cached = None if volatile else self._answers.get(key)
        if cached is not None:
            return cached[0]
        digest = orjson.dumps(build(self.view(), 0))
        index = self.indexes.index(key, digest, self._at, self.clock.advance)
        self._sync()  # advance() moved the clock: what was cached is for an older index
        if not volatile:
            if len(self._answers) >= 4096:  # many distinct queries: start over
                self._answers.clear()
            self._answers[key] = (index, None)
        return index

    def body(self, key: Hashable, build: Build, index: int, volatile: bool) -> bytes:
        cached = None if volatile else self._answers.get(key)
        if cached is not None and cached[0] == index and cached[1] is not None:
            return cached[1]
        body = orjson.dumps(build(self.view(), index))
        if not volatile and cached is not None and cached[0] == index:
            self._answers[key] = (index, body)
        return body

    async def respond(
        self, request: web.Request, key: Hashable, build: Build, volatile: bool = False
    ) -> web.Response:
        """The answer, once its index passes the query's (a blocking query), or now."""
        blocking = parse_blocking(request.query)  # checked already by endpoint()
        index = self.answer_index(key, build, volatile)
        wanted = blocking.index
        if wanted and index <= wanted <= self.clock.now() and not self.closing:
            index = await self._park(key, build, volatile, wanted, blocking.wait)
        response = web.Response(
            body=self.body(key, build, index, volatile), content_type="application/json"
        )
        response.headers["X-Consul-Index"] = str(index)
        return response

    async def _park(
        self, key: Hashable, build: Build, volatile: bool, wanted: int, wait: float
    ) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self.source.hold():
            index = self.answer_index(key, build, volatile)
            while index <= wanted and not self.closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await self.source.wait(remaining)
                index = self.answer_index(key, build, volatile)
        return index

    # -- the edge -------------------------------------------------------------------

    def endpoint(self, handler: Handler) -> Handler:
        """A Consul endpoint: its parameters checked as Consul checks them, and Consul's
        headers on its answer."""

        async def consul_endpoint(request: web.Request) -> web.StreamResponse:
            dc = request.query.get("dc")
            if dc and dc.lower() != self.source.datacenter.lower():
                return self.stamp(_text("No path to datacenter", 500))
            if "filter" in request.query:
                text = "filter is not supported by this API (the mesh's Consul subset)"
                return self.stamp(_text(text, 400))
            try:
                parse_blocking(request.query)
            except BadConsulQuery as exc:
                return self.stamp(_text(str(exc), 400))
            try:
                response = await handler(request)
            except BadConsulQuery as exc:
                response = _text(str(exc), 400)
            except TooManyWatchers as exc:
                response = _text(str(exc), 429)
            return self.stamp(response)

        return consul_endpoint

    def stamp(self, response: web.StreamResponse) -> web.StreamResponse:
        response.headers.setdefault("X-Consul-Index", str(self.clock.now()))
        response.headers["X-Consul-KnownLeader"] = "true"
        response.headers["X-Consul-LastContact"] = "0"
        return response

    def document(
        self,
        key: Callable[[web.Request], Hashable],
        build: Callable[[web.Request], Build],
        volatile: bool = False,
    ) -> Handler:
        """A GET endpoint answering `build(request)(view, index)` under `key(request)`."""

        async def get(request: web.Request) -> web.Response:
            return await self.respond(request, key(request), build(request), volatile)

        return self.endpoint(get)

    async def shutdown(self, app: web.Application) -> None:
        """aiohttp's on_shutdown: parked queries answer now, before the server's short
        wait for its handlers ends and cancels them."""
        self.closing = True
        self.source.wake()


CONSUL = web.AppKey("consul", ConsulHttp)


async def not_found(request: web.Request) -> web.Response:
    """Consul's answer for a path it does not serve (Go's http.NotFound)."""
    return _text("404 page not found\n", 404)


def add_consul_routes(
    app: web.Application,
    source: ConsulSource,
    documents: Mapping[str, tuple[Callable[[], Any], bool]] = {},
    handlers: Iterable[tuple[str, str, Handler]] = (),
) -> ConsulHttp:
    """Add the Consul subset to a program's app, after its own routes (the 404s under
    Consul's prefixes come last, so they never hide a route of ours).

    `documents`: more GET endpoints, path -> (the answer's maker, volatile: not a function
    of the view alone, so built at every request); `handlers`: (method, path, handler)
    served as they are, with Consul's checks and headers (a node's register and
    deregister).
    """
    consul = ConsulHttp(source)

    def origin(request: web.Request) -> Origin:
        return source.origin(request)

    def filtered(request: web.Request) -> tuple[str, Query]:
        name = request.match_info.get("name", "")
        return name, parse_query(request.query)

    def catalog_key(kind: str) -> Callable[[web.Request], Hashable]:
        def key(request: web.Request) -> Hashable:
            name, query = filtered(request)
            tags = tuple(sorted(tag.lower() for tag in query.tags))
            return (kind, name.lower(), tags, query.node_meta, query.passing)

        return key

    def catalog_service(request: web.Request) -> Build:
        name, query = filtered(request)
        return lambda view, index: consulview.catalog_service(view, name, query, index)

    def health_service(request: web.Request) -> Build:
        name, query = filtered(request)
        return lambda view, index: consulview.health_service(view, name, query, index)

    def catalog_services(request: web.Request) -> Build:
        query = parse_query(request.query)
        return lambda view, index: consulview.catalog_services(view, query)

    def catalog_nodes(request: web.Request) -> Build:
        query = parse_query(request.query)
        return lambda view, index: consulview.catalog_nodes(view, query, index)

    def agent_self(request: web.Request) -> Build:
        me = origin(request)
        return lambda view, index: consulview.agent_self(me)

    def leader(request: web.Request) -> Build:
        me = origin(request)
        return lambda view, index: consulview.leader(me)

    routes: list[tuple[str, Handler]] = [
        ("/v1/agent/self", consul.document(lambda r: ("agent/self", origin(r)), agent_self)),
        ("/v1/status/leader", consul.document(lambda r: ("leader", origin(r)), leader)),
        (
            "/v1/catalog/services",
            consul.document(catalog_key("catalog/services"), catalog_services),
        ),
        ("/v1/catalog/nodes", consul.document(catalog_key("catalog/nodes"), catalog_nodes)),
        (
            "/v1/catalog/service/{name}",
            consul.document(catalog_key("catalog/service"), catalog_service),
        ),
        (
            "/v1/health/service/{name}",
            consul.document(catalog_key("health/service"), health_service),
        ),
    ]
    for path, (make, volatile) in documents.items():
        routes.append(
            (
                path,
                consul.document(lambda r, p=path: p, lambda r, m=make: lambda v, i: m(), volatile),
            )
        )
    for path, handler in routes:
        app.router.add_get(path, handler)
    for method, path, handler in handlers:
        app.router.add_route(method, path, consul.endpoint(handler))
    for prefix in PREFIXES:
        app.router.add_route("*", prefix + "{tail:.*}", consul.endpoint(not_found))
    for path in EXACT:
        app.router.add_route("*", path, consul.endpoint(not_found))
    app.on_shutdown.append(consul.shutdown)
    app[CONSUL] = consul
    return consul
