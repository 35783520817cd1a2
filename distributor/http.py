"""The distributor's HTTP API: members, services, blocking queries; /v1/events is in events.py.

    GET /v1/members[?service=S][&tag=T...]   every member record (Entry.document())
    GET /v1/services                         {"services": {name: {"members", "tags"}}}
    GET /v1/services/<name>                  {"service": name, "members": [records]}
    GET /v1/events                           server-sent events (distributor/events.py)

Every answer of the first three carries `X-Mesh-Index` (the registry's version) and
`X-Mesh-Epoch`, and each is a blocking query as Consul's: `?index=V&epoch=E&wait=30s`.

- It answers as soon as the version passes V; at once when V is already passed, when E
  is given and is not this run's epoch, or when V is above the current version (both
  mean the distributor restarted: versions started over). Otherwise it answers after
  the wait with the body unchanged. At version 0, `index=0` waits for the first change.
- `wait` is seconds (`30`, `2.5`), or a number with `s` or `m` (`30s`, `5m`); more than
  300 s is cut to 300 s. With an index and no wait, the wait is 300 s (Consul's 5 min).
  `wait` and `epoch` without an index are checked, then ignored (nothing to wait for).
- With filters, a query wakes on any change of the version, as Consul's index does;
  the client compares the bodies.
- An empty epoch is no epoch (a watch loop's first query knows none yet). A bad index
  (not a whole number >= 0), wait, epoch (over 64 characters),
  service or tag (not a name: shared.wire.LABEL), or one of index, wait, epoch, service
  given twice, is a 400 `{"error": "..."}` that says which.
- A parked query costs one waiting future (VersionWatch), never a poll, and its body is
  made after the wait, from the registry as it is then. Bodies are encoded once per
  version and query (1,000 watchers woken by one change share one encoding).
- On shutdown, parked queries answer at once with the body as it is.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiMapping

from distributor import discovery, metrics, page
from distributor.documents import Filter, members_document, service_document, services_document
from distributor.events import WRITE_TIMEOUT, EventFeed
from distributor.query import BadQuery, name, single
from distributor.registry import Registry
from distributor.watch import (
    DEFAULT_WAIT,
    MAX_WATCHERS,
    Blocking,
    VersionWatch,
    Watchers,
)
from shared.http import TooManyWatchers, json_response

MAX_WAIT = 300.0  # seconds: a longer wait is cut to this
MAX_EPOCH = 64  # characters; ours are 16
KEEPALIVE = 15.0  # seconds between comment lines on an idle event stream
_INDEX = re.compile(r"[0-9]{1,19}")
_WAIT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([sm]?)")


def parse_wait(text: str) -> float:
    """`30`, `2.5`, `30s`, `5m` -> seconds, cut to MAX_WAIT; BadQuery otherwise."""
    match = _WAIT.fullmatch(text)
    if match is None:
        raise BadQuery(f"wait must be seconds, or a number with s or m (30, 30s, 5m), not {text!r}")
    seconds = float(match.group(1)) * (60 if match.group(2) == "m" else 1)
    return min(seconds, MAX_WAIT)


def parse_blocking(query: MultiMapping[str]) -> Blocking:
    """index, epoch and wait; BadQuery says what is wrong with them."""
    index_text, epoch, wait_text = (single(query, k) for k in ("index", "epoch", "wait"))
    if index_text is not None and not _INDEX.fullmatch(index_text):
        raise BadQuery(f"index must be a whole number >= 0, not {index_text!r}")
    epoch = epoch or None  # `epoch=`: a loop's first query knows none yet
    if epoch is not None and len(epoch) > MAX_EPOCH:
        raise BadQuery(f"epoch must be 1 to {MAX_EPOCH} characters, not {epoch!r}")
    wait = DEFAULT_WAIT if wait_text is None else parse_wait(wait_text)
    return Blocking(None if index_text is None else int(index_text), epoch, wait)


def parse_filter(query: MultiMapping[str]) -> Filter:
    """?service=S (once) and ?tag=T (repeatable, all must match)."""
    service = single(query, "service")
    tags = tuple(name(tag, "tag") for tag in query.getall("tag", []))
    return Filter(None if service is None else name(service, "service"), tags)


WATCHERS = web.AppKey("watchers", Watchers)


def _answer(watchers: Watchers, body: bytes) -> web.Response:
    response = web.Response(body=body, content_type="application/json")
    # the version and epoch of the body: it was made for the current version
    response.headers["X-Mesh-Index"] = str(watchers.registry.version)
    response.headers["X-Mesh-Epoch"] = watchers.registry.epoch
    return response


def _bad(exc: BadQuery) -> web.Response:
    return json_response({"error": str(exc)}, 400)


@web.middleware
async def refuse_over_the_cap(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A blocking query or event stream over MESH_MAX_WATCHERS: 429 at once."""
    try:
        return await handler(request)
    except TooManyWatchers as exc:
        return json_response({"error": str(exc)}, 429)


def make_app(
    registry: Registry,
    watch: VersionWatch,
    keepalive: float = KEEPALIVE,
    write_timeout: float = WRITE_TIMEOUT,
    stats: metrics.DistributorStats | None = None,
    max_watchers: int = MAX_WATCHERS,
) -> web.Application:
    """The API's routes; `keepalive` and `write_timeout` are the event streams' (tests
    shorten them), `stats` the server's counters for /metrics, `max_watchers` the
    blocking queries and event streams held at once (beyond, 429)."""
    watchers = Watchers(registry, watch, keepalive, write_timeout, max_watchers)
    feed = EventFeed(watchers)

    async def members(request: web.Request) -> web.Response:
        try:
            only = parse_filter(request.query)
            blocking = parse_blocking(request.query)
        except BadQuery as exc:
            return _bad(exc)
        await watchers.block(blocking)
        if only == Filter():
            return _answer(watchers, watchers.members_body())
        body = watchers.body(("members", only), lambda: members_document(registry, only))
        return _answer(watchers, body)

    async def services(request: web.Request) -> web.Response:
        try:
            blocking = parse_blocking(request.query)
        except BadQuery as exc:
            return _bad(exc)
        await watchers.block(blocking)
        return _answer(watchers, watchers.body("services", lambda: services_document(registry)))

    async def service(request: web.Request) -> web.Response:
        try:
            service = name(request.match_info["name"], "service")
            blocking = parse_blocking(request.query)
        except BadQuery as exc:
            return _bad(exc)
        await watchers.block(blocking)
        body = watchers.body(("service", service), lambda: service_document(registry, service))
        return _answer(watchers, body)

    app = web.Application(middlewares=[refuse_over_the_cap])
    app[WATCHERS] = watchers
    app.on_shutdown.append(watchers.shutdown)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/v1/services", services)
    app.router.add_get("/v1/services/{name}", service)
    app.router.add_get("/v1/events", feed.stream)
    discovery.add_routes(app, registry)
    page.add_routes(app)
    metrics.add_routes(app, watchers, stats)
    return app
