"""Request handlers: the small API services build on.

A handler is an async function of the request body and the caller's member
record, returning a JSON value::

    async def greet(body, caller):
        return {"hello": caller.name, "you_sent": body}

    node.handlers.add("greet", greet)

A plain (not async) function works too, for a handler that never waits: it is answered
at once, as its request is read, with no task of its own (the built-ins are such).

A handler that refuses raises node.errors.RequestFailed: its message goes back to the
caller (a 502 there). The built-ins `ping` and `echo` are registered the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from node.errors import RequestFailed, UnknownMethod
from shared.framing import encode_frame
from shared.wire import MAX_METHOD, MAX_TEXT, FrameTooLarge, Member, Response, encode

log = structlog.get_logger()

# returns a JSON value, or (an async function) an awaitable of one
Handler = Callable[[Any, Member], Any]
# what goes back to the caller: (result, None) or (None, error in a few words)
Answer = tuple[Any, str | None]
# a local answer's frame is never sent; its id is as long as a busy link's, so that a
# result near the cap is judged as it would be from a peer
LOCAL_REQUEST_ID = 10**9


class Handlers:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, method: str, handler: Handler) -> None:
        if not 0 < len(method) <= MAX_METHOD:
            raise ValueError(f"a method name is 1..{MAX_METHOD} characters")
        self._handlers[method] = handler

    def __contains__(self, method: str) -> bool:
        return method in self._handlers

    def start(self, method: str, body: Any, caller: Member) -> Any:
        """Call the handler: its result, or an async handler's awaitable of it (see finish).

        Raises what the handler raises, and UnknownMethod.
        """
        handler = self._handlers.get(method)
        if handler is None:
            raise UnknownMethod(f"unknown method {method!r}")
        return handler(body, caller)

    async def call(self, method: str, body: Any, caller: Member) -> Any:
        result = self.start(method, body, caller)
        return await result if inspect.isawaitable(result) else result

    async def finish(self, method: str, pending: Awaitable[Any]) -> Answer:
        """An async handler's answer, once its awaitable is done."""
        try:
            return await pending, None
        except Exception as exc:
            return None, failure(method, exc)

    async def answer(self, method: str, body: Any, caller: Member, max_result: int) -> Answer:
        """What goes back to a local caller: the handler's result, checked by
        response_frame as a peer's answer is, against a frame cap of `max_result`."""
        try:
            result = await self.call(method, body, caller)
        except Exception as exc:
            return None, failure(method, exc)
        # the same check as for a peer's request, on the frame it would go back in: an
        # answer that fails from another node fails here too
        _, error = response_frame(LOCAL_REQUEST_ID, result, None, max_result)
        return (None, error) if error is not None else (result, None)


def failure(method: str, exc: Exception) -> str:
    """The one place a handler's failure becomes an error: its text clipped to what the
    wire carries. A service's bug must not take the link down: any exception is one."""
    if isinstance(exc, RequestFailed):
        return clip(str(exc))
    log.warning("handler_raised", method=method, error=repr(exc))
    return clip(f"handler raised {type(exc).__name__}: {exc}")


def response_frame(
    request_id: int, result: Any, error: str | None, max_frame: int
) -> tuple[bytes, str | None]:
    """The one check of an answer, for a peer's request and a local one alike: its
    response frame (encoded once), and its error. A result that is not JSON, or whose frame
    is over the cap, becomes an error frame instead (never an oversize frame: the peer
    would drop the link)."""
    try:
        return encode_frame(Response(request_id, result, error), max_frame), error
    except FrameTooLarge:
        error = over_cap(len(encode(Response(request_id, result))))
    except TypeError as exc:  # orjson's JSONEncodeError is one
        error = not_json(exc)
    return encode_frame(Response(request_id, error=error)), error


def not_json(exc: TypeError) -> str:
    return clip(f"result is not JSON: {exc}")


def over_cap(size: int) -> str:
    return f"result of {size} bytes is over the frame cap"


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def ping(body: Any, caller: Member) -> Any:
    return {}


def echo(body: Any, caller: Member) -> Any:
    return body


def builtin_handlers() -> Handlers:
    handlers = Handlers()
    handlers.add("ping", ping)
    handlers.add("echo", echo)
    return handlers
