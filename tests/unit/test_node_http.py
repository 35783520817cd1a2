"""node/http.py: the body of POST /v1/request (parse_request), and PUT /v1/self."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from node import config as node_config
from node.app import Node
from node.errors import BadRequest
from node.http import MAX_TIMEOUT, Call, make_app, parse_request
from shared.framing import encode_frame
from shared.looplag import LoopLag
from shared.wire import MAX_DEPTH, Request, decode


def parse(obj: Any, default_timeout: float = 5.0) -> Call:
    return parse_request(orjson.dumps(obj), default_timeout)


def test_full_request() -> None:
    call = parse({"to": "id-1", "method": "echo", "body": {"x": [1]}, "timeout": 2.5})
    assert call == Call("id-1", None, "echo", {"x": [1]}, 2.5)


def test_defaults_body_and_timeout() -> None:
    assert parse({"to": "alpha", "method": "ping"}, default_timeout=7.0) == Call(
        "alpha", None, "ping", {}, 7.0
    )


def test_by_service() -> None:
    call = parse({"service": "goods", "method": "list", "body": [1]})
    assert call == Call(None, "goods", "list", [1], 5.0)


@pytest.mark.parametrize(
    "doc, why",
    [
        ({"to": "a", "service": "goods", "method": "m"}, "not both"),
        ({"method": "m"}, "either"),
        ({"service": "", "method": "m"}, "service name"),
        ({"service": "bad name", "method": "m"}, "service name"),
        ({"service": ["goods"], "method": "m"}, "service name"),
        ({"service": "-dash-first", "method": "m"}, "service name"),
    ],
)
def test_to_or_service(doc: dict[str, Any], why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        parse(doc)


@pytest.mark.parametrize("body", [None, [], 0, "", False, [1, 2], "text"])
def test_any_json_body_is_passed_through(body: Any) -> None:
    assert parse({"to": "a", "method": "echo", "body": body}).body == body


def test_unknown_fields_are_ignored() -> None:
    assert parse({"to": "a", "method": "m", "extra": 1})[:3] == ("a", None, "m")


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"{'to': 'a'}", b"\xff"])
def test_bad_json(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="JSON"):
        parse_request(raw, 5.0)


@pytest.mark.parametrize("doc", [[], [{"to": "a", "method": "m"}], "x", 1, None, True])
def test_not_an_object(doc: Any) -> None:
    with pytest.raises(BadRequest, match="object"):
        parse(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"method": "echo"},
        {"to": "", "method": "echo"},
        {"to": None, "method": "echo"},
        {"to": 5, "method": "echo"},
        {"to": ["a"], "method": "echo"},
    ],
)
def test_missing_or_empty_to(doc: dict) -> None:
    with pytest.raises(BadRequest, match="'to'"):
        parse(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"to": "a"},
        {"to": "a", "method": ""},
        {"to": "a", "method": None},
        {"to": "a", "method": 1},
        {"to": "a", "method": {"name": "echo"}},
    ],
)
def test_missing_or_empty_method(doc: dict) -> None:
    with pytest.raises(BadRequest, match="'method'"):
        parse(doc)


@pytest.mark.parametrize(
    "timeout", [0, 0.0, -1, -0.5, 300.0001, 301, 1e9, True, False, "5", None, [5], {"s": 5}]
)
def test_bad_timeouts(timeout: Any) -> None:
    with pytest.raises(BadRequest, match="'timeout'"):
        parse({"to": "a", "method": "m", "timeout": timeout})


@pytest.mark.parametrize("raw_timeout", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_timeouts(raw_timeout: bytes) -> None:
    # orjson itself refuses these literals; either way it is a 400, never a crash
    raw = b'{"to": "a", "method": "m", "timeout": ' + raw_timeout + b"}"
    with pytest.raises(BadRequest):
        parse_request(raw, 5.0)


def test_nan_timeout_refused_by_the_check_itself() -> None:
    # a default that is not finite is refused too (the check runs on the default)
    with pytest.raises(BadRequest, match="'timeout'"):
        parse({"to": "a", "method": "m"}, default_timeout=float("nan"))


@pytest.mark.parametrize("timeout", [300, 300.0, 0.001, 1e-9, 1, 5, 299.5])
def test_good_timeouts(timeout: float) -> None:
    result = parse({"to": "a", "method": "m", "timeout": timeout}).timeout
    assert result == float(timeout)
    assert isinstance(result, float)


def test_max_timeout_is_300() -> None:
    assert MAX_TIMEOUT == 300


@pytest.mark.parametrize("depth", [1, 252, 253, 254, 255, 300, 1000, 1023, 2000])
def test_a_body_too_deep_for_a_frame_is_a_bad_request(depth: int) -> None:
    """orjson reads 1024 levels but writes 254: a body the request frame could not carry
    is a 400 here, not a TypeError (an HTTP 500) when the frame is encoded."""
    raw = b'{"to": "a", "method": "echo", "body": ' + b"[" * depth + b"]" * depth + b"}"
    if depth + 1 > MAX_DEPTH:  # the request frame is the body's lists inside one object
        with pytest.raises(BadRequest):
            parse_request(raw, 5.0)
        return
    _, _, method, body, _ = parse_request(raw, 5.0)
    assert decode(encode_frame(Request(1, method, body))[4:]) == Request(1, method, body)


# -- PUT /v1/self ---------------------------------------------------------------------


@pytest.fixture
async def solo() -> AsyncIterator[tuple[Node, TestClient, list[str]]]:
    """A node that is not started, its HTTP API, and the announcements it makes."""
    node = Node(
        node_config.parse(["--name", "solo", "--port", "0"], {"MESH_DISTRIBUTORS": ""}), LoopLag()
    )
    announced: list[str] = []
    node.registrar.announce = lambda: announced.append("distributors")  # type: ignore[method-assign]
    node.mesh.announce = lambda: announced.append("peers")  # type: ignore[method-assign]
    async with TestClient(TestServer(make_app(node))) as client:
        yield node, client, announced


async def put_self(client: TestClient, doc: Any) -> tuple[int, Any]:
    response = await client.put("/v1/self", data=orjson.dumps(doc))
    return response.status, await response.json()


async def test_put_self_that_changes_nothing_bumps_nothing_and_announces_nothing(
    solo: tuple[Node, TestClient, list[str]],
) -> None:
    node, client, announced = solo
    start = node.incarnation
    status, doc = await put_self(client, {"tags": ["v1"], "meta": {"zone": "a"}})
    assert status == 200 and doc["incarnation"] == start + 1
    assert announced == ["distributors", "peers"]
    for same in (
        {"tags": ["v1"]},
        {"meta": {"zone": "a"}, "draining": False},
        {"services": [], "tags": ["v1"], "meta": {"zone": "a"}, "draining": False},
        {},
    ):
        status, doc = await put_self(client, same)
        assert status == 200 and doc["incarnation"] == start + 1, same
        assert doc["tags"] == ["v1"] and doc["meta"] == {"zone": "a"}
    assert node.incarnation == start + 1
    assert announced == ["distributors", "peers"]  # nothing more
    status, doc = await put_self(client, {"draining": True})  # a real change still counts
    assert doc["incarnation"] == start + 2 and len(announced) == 4


@pytest.mark.parametrize(
    "doc",
    [
        {"services": {"a": 1}},  # an object is no list, whatever its keys
        {"tags": {"v1": True}},
        {"services": "goods"},
        {"services": None},  # null is not "keep": leave the field out for that
        {"tags": None},
        {"meta": None},
        {"draining": None},
        {"meta": ["a"]},
        {"draining": 1},
        [],
        None,
    ],
)
async def test_put_self_refuses_a_field_of_the_wrong_type(
    solo: tuple[Node, TestClient, list[str]], doc: Any
) -> None:
    node, client, announced = solo
    start = node.incarnation
    status, answer = await put_self(client, doc)
    assert status == 400 and answer["error"], (doc, answer)
    assert node.incarnation == start and announced == []
