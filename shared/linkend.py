"""Why a link ended: the one vocabulary the links, the registry and the metrics share."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.wire import Error


class EndReason(enum.StrEnum):
    """As in member_left's reason and the metrics' labels."""

    LEAVE = "leave"  # the peer said goodbye
    CLOSED = "closed"  # the connection closed or could not be opened
    TIMEOUT = "timeout"  # heartbeat silence (a frozen or cut-off peer)
    PROTOCOL = "protocol"  # bad input, a refused handshake, or an error frame


@dataclass(frozen=True, slots=True)
class LinkEnd:
    reason: EndReason
    detail: str
    code: str | None = None  # the error frame's code, when the peer refused us with one
    sent: str | None = None  # the error frame's code, when we refused the peer with one


class LinkDown(Exception):
    """The link ended while we were reading or writing on it."""

    def __init__(self, end: LinkEnd) -> None:
        super().__init__(end.detail)
        self.end = end


def refused(error: Error) -> LinkDown:
    """The peer's error frame as the end of our link."""
    return LinkDown(
        LinkEnd(EndReason.PROTOCOL, f"refused: {error.code}: {error.message}", error.code)
    )


def describe_error(exc: BaseException) -> str:
    """A failure in a few words, for last_error and logs."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
