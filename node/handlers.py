"""Request handlers: the small API services build on.

A handler is an async function of the request body and the caller's member
record, returning a JSON value::

    async def greet(body, caller):
        return {"hello": caller.name, "you_sent": body}

    node.handlers.add("greet", greet)

A handler that refuses raises node.errors.RequestFailed: its message goes back to the
caller (a 502 there). The built-ins `ping` and `echo` are registered the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from node.errors import RequestFailed, UnknownMethod
from shared.wire import MAX_METHOD, MAX_TEXT, Member

log = structlog.get_logger()

Handler = Callable[[Any, Member], Awaitable[Any]]


class Handlers:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, method: str, handler: Handler) -> None:
        if not 0 < len(method) <= MAX_METHOD:
            raise ValueError(f"a method name is 1..{MAX_METHOD} characters")
        self._handlers[method] = handler

    def __contains__(self, method: str) -> bool:
        return method in self._handlers

    async def call(self, method: str, body: Any, caller: Member) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise UnknownMethod(f"unknown method {method!r}")
        return await handler(body, caller)

    async def answer(
        self, method: str, body: Any, caller: Member, max_result: int
    ) -> tuple[Any, str | None]:
        """(result, None) or (None, error in a few words): what goes back to the caller.

        The one place a handler's failure becomes an error: its text clipped to
        what the wire carries, a result that is not JSON or too big refused.
        """
        try:
            result = await self.call(method, body, caller)
        except RequestFailed as exc:
            return None, clip(str(exc))
        except Exception as exc:  # a service's bug must not take the link down
            log.warning("handler_raised", method=method, error=repr(exc))
            return None, clip(f"handler raised {type(exc).__name__}: {exc}")
        try:
            size = len(orjson.dumps(result))
        except TypeError as exc:
            return None, clip(f"result is not JSON: {exc}")
        if size > max_result:
            return None, f"result of {size} bytes is over the frame cap"
        return result, None


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


async def ping(body: Any, caller: Member) -> Any:
    return {}


async def echo(body: Any, caller: Member) -> Any:
    return body


def builtin_handlers() -> Handlers:
    handlers = Handlers()
    handlers.add("ping", ping)
    handlers.add("echo", echo)
    return handlers
