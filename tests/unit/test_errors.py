"""node/errors.py: each reason a request fails has one HTTP status (DESIGN.md's table), and
node/http.py answers every failure with it."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node import errors
from node.app import Node
from node.config import parse
from node.http import answer_failures, make_app
from shared.looplag import LoopLag

# DESIGN.md, "HTTP": POST /v1/request's status table
DESIGN_STATUS = [
    (errors.BadRequest, 400),
    (errors.UnknownMember, 404),
    (errors.AmbiguousName, 409),
    (errors.RequestTooLarge, 413),
    (errors.TooManyInFlight, 429),
    (errors.RequestFailed, 502),
    (errors.UnknownMethod, 502),
    (errors.NotSent, 502),
    (errors.PeerUnavailable, 503),
    (errors.NoProvider, 503),
    (errors.RequestTimedOut, 504),
]


@pytest.mark.parametrize(("kind", "status"), DESIGN_STATUS)
def test_each_reason_has_the_status_of_the_design_table(kind: type, status: int) -> None:
    assert kind("why").status == status


def test_a_reason_of_a_service_answers_as_its_nearest_listed_base() -> None:
    class OutOfStock(errors.RequestFailed):
        pass

    class Overloaded(errors.TooManyInFlight):
        pass

    assert OutOfStock("none left").status == 502
    assert Overloaded("later").status == 429 and not Overloaded("later").may_have_run


def test_only_failures_that_no_handler_saw_let_a_routed_request_try_another() -> None:
    untried = {kind for kind, _ in DESIGN_STATUS if not kind.may_have_run}
    assert untried == {
        errors.TooManyInFlight,
        errors.NotSent,
        errors.PeerUnavailable,
        errors.NoProvider,
    }


async def answer(
    app: web.Application, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, str | None]:
    """(status, JSON body, X-Mesh-Member) of one request to `app`."""
    async with TestClient(TestServer(app)) as client:
        response = await client.request(method, path, **kwargs)
        return response.status, await response.json(), response.headers.get("X-Mesh-Member")


@pytest.mark.parametrize(("kind", "status"), DESIGN_STATUS)
async def test_the_http_api_answers_a_failure_with_its_status_error_extra_and_member(
    kind: type, status: int
) -> None:
    async def failing(request: web.Request) -> web.Response:
        failure = kind("it went wrong", state="retrying")
        failure.member = "id-callee"
        raise failure

    app = web.Application(middlewares=[answer_failures])
    app.router.add_get("/fail", failing)
    body = {"error": "it went wrong", "state": "retrying"}
    assert await answer(app, "GET", "/fail") == (status, body, "id-callee")


async def test_the_node_routes_raise_their_failures_to_the_one_mapping() -> None:
    env = {"MESH_DISTRIBUTORS": "", "MESH_MAX_FRAME": "4096"}
    node = Node(parse(["--name", "solo", "--port", "0"], env), LoopLag())
    app = make_app(node)
    nobody = {"to": "nobody", "method": "ping"}
    assert (await answer(app, "POST", "/v1/request", json=nobody))[:2] == (
        404,
        {"error": "no known member has the id or name 'nobody'"},
    )
    assert (await answer(app, "POST", "/v1/request", data=b"[1]"))[0] == 400
    assert (await answer(app, "POST", "/v1/request", data=b"x" * 5000))[0] == 413
    assert (await answer(app, "GET", "/v1/services/no!such"))[0] == 400
    assert (await answer(app, "PUT", "/v1/self", json={"tags": ["bad tag!"]}))[0] == 400
    assert (await answer(app, "PUT", "/v1/self", json={"colour": "red"}))[0] == 400
    unknown = {"to": "solo", "method": "nope"}
    assert (await answer(app, "POST", "/v1/request", json=unknown))[::2] == (502, node.id)
