"""The node's HTTP API: /healthz, /readyz, /v1/status, /v1/request, /v1/services, /v1/self,
/metrics, and Consul's API (node/consul.py)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler

from node import consul, metrics
from node.app import Node
from node.definitions import parse_service
from node.errors import BadRequest, RequestFailed, RequestTooLarge
from shared.http import json_response
from shared.services import service_instances, services_summary
from shared.wire import LABEL, MAX_DEPTH, json_object, nests_too_deeply

MAX_TIMEOUT = 300.0
SELF_FIELDS = ("services", "tags", "meta", "draining")  # what PUT /v1/self may change
SELF_FIELD_TYPES = {"services": list, "tags": list, "meta": dict, "draining": bool}
SELF_FIELD_WORDS = {
    "services": "a list of names",
    "tags": "a list of names",
    "meta": "an object of strings",
    "draining": "true or false",
}


class Call(NamedTuple):
    """A /v1/request body: exactly one of `to` and `service` is set."""

    to: str | None
    service: str | None
    method: str
    body: Any
    timeout: float


def parse_request(raw: bytes, default_timeout: float) -> Call:
    """A /v1/request body, checked; BadRequest says what is wrong."""
    doc = json_object(raw, "body", BadRequest)
    if nests_too_deeply(raw, doc):  # its request frame could not be written
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
    to, service, method = doc.get("to"), doc.get("service"), doc.get("method")
    if (to is None) == (service is None):
        raise BadRequest("give either 'to' (a member's id or name) or 'service', not both")
    if to is not None and (not isinstance(to, str) or not to):
        raise BadRequest("'to' must be a member's id or name")
    if service is not None and (not isinstance(service, str) or not LABEL.fullmatch(service)):
        raise BadRequest(f"'service' must be a service name ({LABEL.pattern})")
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
    return Call(to, service, method, doc.get("body", {}), float(timeout))


def failure_response(exc: RequestFailed) -> web.Response:
    """The one place a failed request becomes an HTTP answer: the status node.errors.STATUS
    gives its reason, the error and its extra fields, and the member called, if any."""
    response = json_response({"error": str(exc), **exc.extra}, exc.status)
    if exc.member is not None:
        response.headers["X-Mesh-Member"] = exc.member
    return response


def result_response(member: str, result: Any) -> web.Response:
    """A request's result, naming the member that gave it."""
    response = json_response(result)
    response.headers["X-Mesh-Member"] = member
    return response


@web.middleware
async def answer_failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route's RequestFailed answered by failure_response."""
    try:
        return await handler(request)
    except RequestFailed as exc:
        return failure_response(exc)


def make_app(node: Node) -> web.Application:
    max_frame = node.config.tuning.max_frame
    too_large = f"body is over the frame cap ({max_frame})"

    async def status(request: web.Request) -> web.Response:
        return json_response(node.status())

    async def readyz(request: web.Request) -> web.Response:
        reason = node.readiness()
        if reason is None:
            return json_response({"status": "ready"})
        return json_response({"status": "not_ready", "reason": reason}, 503)

    async def services(request: web.Request) -> web.Response:
        return json_response({"services": services_summary(node.records())})

    async def service(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not LABEL.fullmatch(name):
            raise BadRequest(f"{name!r} is not a service name")
        return json_response(
            {
                "service": name,
                "members": node.providers(name),
                "instances": service_instances(node.records(), name),
            }
        )

    async def put_self(request: web.Request) -> web.Response:
        doc = json_object(await request.read(), "body", BadRequest)
        unknown = sorted(set(doc) - set(SELF_FIELDS))
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}: give {', '.join(SELF_FIELDS)}")
        for field, value in doc.items():
            # JSON's own types: null is no "keep" (leave the field out for that), and an
            # object is no list of names (the record's checks would take its keys)
            if not isinstance(value, SELF_FIELD_TYPES[field]):
                raise BadRequest(f"{field} must be {SELF_FIELD_WORDS[field]}, not {value!r:.80}")
        try:
            record = node.update_self(**doc)
        except ValueError as exc:  # a field's value: the record's own checks say what
            raise BadRequest(str(exc)) from None
        return json_response(record.document())

    async def register_instance(request: web.Request) -> web.Response:
        # Consul's clients send the definition with no Content-Type: read it whatever it is
        doc = json_object(await request.read(), "body", BadRequest)
        try:
            node.register_instance(parse_service(doc))
        except ValueError as exc:  # names the field
            raise BadRequest(str(exc)) from None
        return web.Response(status=200)  # Consul answers an empty 200

    async def deregister_instance(request: web.Request) -> web.Response:
        instance_id = request.match_info["id"]
        if not node.deregister_instance(instance_id):
            return json_response({"error": f"no instance {instance_id!r} on this node"}, 404)
        return web.Response(status=200)

    async def post_request(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_frame:
            raise RequestTooLarge(too_large)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestTooLarge(too_large) from None
        call = parse_request(raw, node.config.tuning.request_timeout)
        member, result = await node.call(
            call.to, call.method, call.body, call.timeout, service=call.service
        )
        return result_response(member, result)

    # one byte over the cap is enough to refuse; the request frame itself is checked again
    app = web.Application(client_max_size=max_frame + 1, middlewares=[answer_failures])
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/request", post_request)
    app.router.add_get("/v1/services", services)
    app.router.add_get("/v1/services/{name}", service)
    app.router.add_put("/v1/self", put_self)
    metrics.add_routes(app, node)
    # Consul's API last: its 404s under Consul's prefixes must not hide a route of ours
    agent = [
        ("PUT", "/v1/agent/service/register", register_instance),
        ("PUT", "/v1/agent/service/deregister/{id}", deregister_instance),
    ]
    consul.add_routes(app, node, agent)
    return app
