"""Requests this node makes: to one member by id or name, or to any provider of a service,
with failover while no handler can have run (DESIGN.md, "Services").

`Node` owns a `Calls` and hands out its `request` and `call` as its own: the Python API
(`await node.request(service="goods", method="list")`) and what POST /v1/request and the
gateway use.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, Protocol

from node.errors import (
    AmbiguousName,
    BadRequest,
    NoProvider,
    RequestFailed,
    RequestTimedOut,
    UnknownMember,
)
from node.handlers import Handlers
from node.membership import Membership
from node.mesh import Mesh
from node.metrics import OUTCOMES, NodeStats
from node.routing import TRIES, ProviderPicker
from shared.config import Tuning
from shared.wire import MAX_METHOD, Member

P = ParamSpec("P")


class Local(Protocol):
    """What the calls need of their node: who it is and what it offers, as of now."""

    id: str
    name: str
    services: tuple[str, ...]
    draining: bool

    @property
    def member(self) -> Member: ...


def _result_only(
    call: Callable[Concatenate[Calls, P], Awaitable[tuple[str, Any]]],
) -> Callable[Concatenate[Calls, P], Awaitable[Any]]:
    """`call`, returning the result without the id of the member that answered."""

    async def request(self: Calls, *args: P.args, **kwargs: P.kwargs) -> Any:
        """As call() (the same arguments, the same errors), but returns the result only."""
        return (await call(self, *args, **kwargs))[1]

    request.__qualname__ = "Calls.request"
    request.__signature__ = inspect.signature(call).replace(return_annotation="Any")  # type: ignore[attr-defined]
    return request


class Calls:
    def __init__(
        self,
        local: Local,
        membership: Membership,
        mesh: Mesh,
        handlers: Handlers,
        stats: NodeStats,
        tuning: Tuning,
    ) -> None:
        self._local = local
        self._membership = membership
        self._mesh = mesh
        self._handlers = handlers
        self._stats = stats
        self._tuning = tuning
        self._picker = ProviderPicker()
        self._local_in_flight = 0  # requests our own handlers are answering for ourselves

    def resolve(self, to: str) -> str:
        """An id or a name -> the member's id (ourselves included)."""
        local = self._local
        if to == local.id or self._membership.get(to) is not None:
            return to
        ids = [m.id for m in self._membership.members() if m.name == to]
        if local.name == to:
            ids.append(local.id)
        if not ids:
            raise UnknownMember(f"no known member has the id or name {to!r}")
        if len(ids) > 1:
            raise AmbiguousName(f"several members are named {to!r}: use the id", ids=sorted(ids))
        return ids[0]

    async def call(
        self,
        to: str | None = None,
        method: str = "ping",
        body: Any = None,
        timeout: float | None = None,
        *,
        service: str | None = None,
    ) -> tuple[str, Any]:
        """Call `method` on the member `to` (id or name), or on any provider of `service`:
        (the id of the member that answered, its result).

        Raises node.errors.RequestFailed otherwise: its `status` is the HTTP code that says
        why, its `member` the id of the member called, if one was chosen.
        """
        started = time.perf_counter()
        outcome = "error"
        try:
            if (to is None) == (service is None):
                raise BadRequest("give either 'to' (a member) or 'service', not both")
            if not 0 < len(method) <= MAX_METHOD:
                raise BadRequest(f"'method' must be 1..{MAX_METHOD} characters")
            if timeout is None:
                timeout = self._tuning.request_timeout
            if to is not None:
                target = self.resolve(to)
                try:
                    if target != self._local.id:  # a peer: the mesh's request, no layer between
                        answer = target, await self._mesh.request(target, method, body, timeout)
                    else:
                        answer = target, await self._call_member(target, method, body, timeout)
                except RequestFailed as exc:
                    exc.member = target
                    raise
            else:
                assert service is not None
                answer = await self._call_service(service, method, body, timeout)
            outcome = "ok"
            return answer
        except RequestFailed as exc:
            outcome = OUTCOMES.get(exc.status, "error")
            raise
        except asyncio.CancelledError:  # the caller went away (an HTTP client hung up)
            outcome = "cancelled"
            raise
        finally:  # one count and one latency per call, however many providers it tried
            mode = "direct" if to is not None else "service"
            elapsed = time.perf_counter() - started
            self._stats.request_done(method, mode, outcome, elapsed, self._handlers)

    request = _result_only(call)

    async def _call_service(
        self, service: str, method: str, body: Any, timeout: float
    ) -> tuple[str, Any]:
        """The provider with the fewest requests in flight, then the next one, TRIES in all,
        but only while no handler can have run: no request is ever answered twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        tried: set[str] = set()
        failure: RequestFailed | None = None
        while len(tried) < TRIES:
            target = self._picker.pick(service, self._eligible(service, tried))
            if target is None:
                break
            tried.add(target)
            try:
                return target, await self._call_member(target, method, body, deadline - loop.time())
            except RequestFailed as exc:
                exc.member = target
                if exc.may_have_run:
                    raise
                failure = exc
        if failure is not None:
            raise failure
        raise NoProvider(f"no connected provider of {service!r}", service=service)

    def _eligible(self, service: str, tried: set[str]) -> dict[str, int]:
        """Providers that may take a routed request now: member id -> requests in flight."""
        local = self._local
        eligible = {}
        if service in local.services and not local.draining and local.id not in tried:
            eligible[local.id] = self._local_in_flight
        for peer_id, peer in self._mesh.peers.items():
            record = peer.member
            if (
                service in record.services
                and not record.draining
                and peer.status.state == "connected"
                and peer_id not in tried
            ):
                eligible[peer_id] = self._mesh.in_flight(peer_id)
        return eligible

    async def _call_member(self, target: str, method: str, body: Any, timeout: float) -> Any:
        if target != self._local.id:
            return await self._mesh.request(target, method, body, timeout)
        self._local_in_flight += 1
        try:  # a request to ourselves is answered here
            async with asyncio.timeout(timeout):
                max_result = self._tuning.max_frame
                caller = self._local.member
                result, error = await self._handlers.answer(method, body, caller, max_result)
        except TimeoutError:
            raise RequestTimedOut(f"no answer within {timeout} s") from None
        finally:
            self._local_in_flight -= 1
        if error is not None:
            raise RequestFailed(error)
        return result
