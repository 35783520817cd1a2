"""Why a request got no result, and the HTTP status each reason answers with.

Every failure of a request (POST /v1/request, the Python API) is a RequestFailed; its
class says why. STATUS is the one place a reason becomes an HTTP status (DESIGN.md, the
/v1/request table): node/http.py answers with it, the Python API shows it as
`exc.status`, and the node's request metrics name their outcome after it.
"""

from __future__ import annotations

from typing import Any


class RequestFailed(Exception):
    """A request that did not get a result: a handler raised (a service raises it to
    refuse), the method is unknown there, or the link died mid-request, unless a
    subclass says otherwise.

    `may_have_run` is False only when no handler can have seen the request (its frame
    never reached the transport, or the callee refused it as busy): only then may a
    routed request try another provider. `member` is the id of the member that was
    called, once one was chosen. `extra` goes into the error's JSON answer.
    """

    may_have_run = True

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra
        self.member: str | None = None

    @property
    def status(self) -> int:
        """The HTTP status that says why: STATUS's entry for the nearest listed class."""
        return next(STATUS[kind] for kind in type(self).__mro__ if kind in STATUS)


class UnknownMethod(RequestFailed):
    pass


class BadRequest(RequestFailed):
    """Missing or wrong fields (HTTP or Python API): nothing was sent."""


class UnknownMember(RequestFailed):
    """No known member has that id or name."""


class AmbiguousName(RequestFailed):
    """Several members share that name (`ids` lists them)."""


class RequestTooLarge(RequestFailed):
    """The request is over the frame cap: nothing was sent."""


class TooManyInFlight(RequestFailed):
    """Our own MESH_MAX_INFLIGHT on the link, or the callee's (it answered `busy`):
    nothing ran."""

    may_have_run = False


class NotSent(RequestFailed):
    """The link was already closing: the request frame never reached the transport."""

    may_have_run = False


class PeerUnavailable(RequestFailed):
    """The member is known but its link is not `connected` (`state` says which)."""

    may_have_run = False


class NoProvider(RequestFailed):
    """No provider of the service is connected and not draining."""

    may_have_run = False


class RequestTimedOut(RequestFailed):
    """No answer within the timeout."""


# The HTTP status of each reason; a class not listed answers with its nearest listed base's.
STATUS: dict[type, int] = {
    BadRequest: 400,
    UnknownMember: 404,
    AmbiguousName: 409,
    RequestTooLarge: 413,
    TooManyInFlight: 429,
    RequestFailed: 502,  # UnknownMethod and NotSent too: the callee, or the link, failed
    PeerUnavailable: 503,
    NoProvider: 503,
    RequestTimedOut: 504,
}
