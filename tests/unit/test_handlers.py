"""node/handlers.py: the built-in methods and the small API services add to."""

from __future__ import annotations

from typing import Any

import pytest

from node.errors import RequestFailed, UnknownMethod
from node.handlers import LOCAL_REQUEST_ID, Handlers, builtin_handlers, response_frame
from shared.wire import MAX_METHOD, Member

CALLER = Member("id-c", "caller", "10.0.0.9:9010", 1)


async def test_ping_returns_empty_object() -> None:
    handlers = builtin_handlers()
    assert await handlers.call("ping", {"ignored": True}, CALLER) == {}
    assert await handlers.call("ping", None, CALLER) == {}


@pytest.mark.parametrize("body", [{}, {"a": [1, 2, {"b": None}]}, [1, "x"], "text", 3.5, None])
async def test_echo_returns_its_body_unchanged(body: Any) -> None:
    assert await builtin_handlers().call("echo", body, CALLER) == body


def test_builtins_are_registered() -> None:
    handlers = builtin_handlers()
    assert "ping" in handlers
    assert "echo" in handlers
    assert "greet" not in handlers


async def test_unknown_method_raises() -> None:
    with pytest.raises(UnknownMethod) as info:
        await builtin_handlers().call("nope", {}, CALLER)
    assert "nope" in str(info.value)
    # the HTTP layer maps it to 502 (unknown there)
    assert isinstance(info.value, RequestFailed)
    assert info.value.status == 502


async def test_added_handler_gets_body_and_caller() -> None:
    seen = []

    async def greet(body: Any, caller: Member) -> Any:
        seen.append((body, caller))
        return {"hello": caller.name, "you_sent": body}

    handlers = builtin_handlers()
    handlers.add("greet", greet)
    assert "greet" in handlers
    assert await handlers.call("greet", [1], CALLER) == {"hello": "caller", "you_sent": [1]}
    assert seen == [([1], CALLER)]


async def test_add_replaces_an_existing_method() -> None:
    async def loud_echo(body: Any, caller: Member) -> Any:
        return {"echoed": body}

    handlers = builtin_handlers()
    handlers.add("echo", loud_echo)
    assert await handlers.call("echo", 1, CALLER) == {"echoed": 1}


async def test_handler_exception_propagates() -> None:
    async def broken(body: Any, caller: Member) -> Any:
        raise RuntimeError("boom")

    handlers = Handlers()
    handlers.add("broken", broken)
    with pytest.raises(RuntimeError, match="boom"):
        await handlers.call("broken", {}, CALLER)


def test_empty_handlers_know_nothing() -> None:
    assert "ping" not in Handlers()


@pytest.mark.parametrize("method", ["", "m" * (MAX_METHOD + 1)])
def test_add_refuses_bad_method_names(method: str) -> None:
    async def handler(body: Any, caller: Member) -> Any:
        return None

    handlers = Handlers()
    with pytest.raises(ValueError):
        handlers.add(method, handler)
    assert method not in handlers


@pytest.mark.parametrize("method", ["m", "m" * MAX_METHOD, "svc.do-thing"])
def test_add_accepts_method_names_up_to_the_limit(method: str) -> None:
    async def handler(body: Any, caller: Member) -> Any:
        return None

    handlers = Handlers()
    handlers.add(method, handler)
    assert method in handlers


async def test_answer_maps_every_handler_failure_to_a_short_error() -> None:
    from node.handlers import Handlers
    from shared.wire import MAX_TEXT, Member

    caller = Member("id", "caller", "h:1")

    async def long_error(body, caller):
        raise ValueError("x" * 5000)

    async def not_json(body, caller):
        return {1, 2}

    async def big(body, caller):
        return "y" * 2000

    handlers = Handlers()
    handlers.add("long_error", long_error)
    handlers.add("not_json", not_json)
    handlers.add("big", big)
    result, error = await handlers.answer("long_error", None, caller, 1000)
    assert result is None and error.startswith("handler raised ValueError")
    assert len(error) <= MAX_TEXT
    assert (await handlers.answer("not_json", None, caller, 1000))[1].startswith(
        "result is not JSON"
    )
    assert "over the frame cap" in (await handlers.answer("big", None, caller, 1000))[1]
    assert (await handlers.answer("big", None, caller, 4000)) == ("y" * 2000, None)
    assert "unknown method" in (await handlers.answer("nope", None, caller, 1000))[1]


async def test_a_plain_function_is_a_handler_too() -> None:
    """Answered at once (no task): start() gives its result, not an awaitable."""

    def shout(body: Any, caller: Member) -> Any:
        if body is None:
            raise RequestFailed("nothing to shout")
        return str(body).upper()

    handlers = Handlers()
    handlers.add("shout", shout)
    assert handlers.start("shout", "hi", CALLER) == "HI"
    assert await handlers.call("shout", "hi", CALLER) == "HI"
    assert await handlers.answer("shout", "hi", CALLER, 100) == ("HI", None)
    assert await handlers.answer("shout", None, CALLER, 100) == (None, "nothing to shout")
    assert builtin_handlers().start("echo", [1], CALLER) == [1]


@pytest.mark.parametrize("cap", [4096, 65536])
async def test_a_local_answer_meets_the_cap_as_a_remote_one_does(cap: int) -> None:
    """One check of a result's size: a result whose JSON fits the cap but whose response
    frame does not is refused locally as the mesh refuses it for a peer (it was 200 here
    and 502 from any other node)."""
    handlers = Handlers()
    handlers.add("sized", lambda body, caller: "x" * body)
    refused_fitting_json = 0
    for size in range(cap - 80, cap + 2):  # the JSON string is size + 2 bytes
        local_result, local_error = await handlers.answer("sized", size, CALLER, cap)
        _, remote_error = response_frame(LOCAL_REQUEST_ID, "x" * size, None, cap)
        assert (local_error is None) == (remote_error is None), size
        if local_error is not None:
            assert local_error == remote_error and "over the frame cap" in local_error
            refused_fitting_json += size + 2 <= cap
        else:
            assert local_result == "x" * size
    assert refused_fitting_json > 0  # the frame's envelope counts, locally too
