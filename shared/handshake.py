"""A link's opening as a sans-I/O state machine (h11's Connection, for our handshake).

Feed it the peer's frames; it returns the frames to send and, once the peer has
proved itself, holds the peer's hello. No socket and no clock: the caller moves
the bytes and enforces the handshake timeout. Both sides run the same machine:

    dialer:   send hello -> await hello -> [send auth -> await auth] -> done
    accepter: await hello -> send hello -> [send auth -> await auth] -> done

Versions must overlap; with a mesh secret each side proves it with an HMAC over
the direction, both ids and both nonces, so a proof is good for one link only.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import replace

from shared.linkend import EndReason, LinkDown, LinkEnd, refused
from shared.wire import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    Error,
    Hello,
    Message,
    versions_overlap,
)

NONCE_BYTES = 32  # per-link challenge
# the proof's own version: fixed, not the protocol's, so versions 1 and 2 authenticate alike
AUTH_SCHEME = 1


def auth_proof(secret: bytes, sender: Hello, receiver: Hello, sender_dialled: bool) -> str:
    """HMAC over the direction, both ids and both nonces (fresh per link).

    The direction and the sender's id come first, so a proof sent back to its
    author (reflection) never matches what the author expects from the other side.
    """
    role = "dialer" if sender_dialled else "accepter"
    text = (
        f"mesh-auth|v{AUTH_SCHEME}|{role}|{sender.id}|{receiver.id}|{sender.nonce}|{receiver.nonce}"
    )
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


class HandshakeFailed(LinkDown):
    """The handshake cannot complete; `reply` is the error frame to send the peer first."""

    def __init__(self, end: LinkEnd, reply: Error | None = None) -> None:
        super().__init__(end)
        self.reply = reply


class State(enum.Enum):
    AWAIT_HELLO = "await hello"
    AWAIT_AUTH = "await auth"
    DONE = "done"


class Handshake:
    """One side of one link's handshake. `start()` first, then `receive()` each message
    until `peer` is set; a HandshakeFailed ends it (send its reply, then close)."""

    def __init__(self, mine: Hello, *, dialer: bool, secret: bytes | None, nonce: str) -> None:
        self.mine = replace(mine, nonce=nonce)
        self.dialer = dialer
        self.secret = secret
        self.state = State.AWAIT_HELLO
        self.theirs: Hello | None = None  # the peer's hello, once it came (maybe not proved)

    @property
    def peer(self) -> Hello | None:
        """The peer's hello once the handshake is done, else None."""
        return self.theirs if self.state is State.DONE else None

    def start(self) -> list[Message]:
        """What to send before anything comes in: the dialer speaks first."""
        return [self.mine] if self.dialer else []

    def receive(self, message: Message) -> list[Message]:
        """The peer's next message; returns what to send. HandshakeFailed if it cannot go on."""
        if isinstance(message, Error):
            raise HandshakeFailed(refused(message).end)
        if self.state is State.AWAIT_HELLO:
            return self._hello(message)
        if self.state is State.AWAIT_AUTH:
            return self._auth(message)
        raise HandshakeFailed(LinkEnd(EndReason.PROTOCOL, "the handshake is already done"))

    def _hello(self, message: Message) -> list[Message]:
        if not isinstance(message, Hello):
            raise HandshakeFailed(
                LinkEnd(EndReason.PROTOCOL, f"expected hello, got {message.TYPE}")
            )
        if not versions_overlap(message):
            text = (
                f"peer speaks versions {message.min_version}..{message.version}, "
                f"we speak {MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}"
            )
            raise self._refuse("unsupported_version", text, text)
        self.theirs = message
        out: list[Message] = [] if self.dialer else [self.mine]
        if self.secret is None:
            self.state = State.DONE
            return out
        if message.id == self.mine.id or len(message.nonce) != 2 * NONCE_BYTES:
            # our own hello sent back, or no real challenge: nothing to prove against
            raise self._refuse(
                "auth_failed",
                "a hello with a fresh nonce is required",
                "authentication failed: bad hello",
            )
        self.state = State.AWAIT_AUTH
        return [*out, Auth(auth_proof(self.secret, self.mine, message, self.dialer))]

    def _auth(self, message: Message) -> list[Message]:
        assert self.secret is not None and self.theirs is not None
        expected = auth_proof(self.secret, self.theirs, self.mine, not self.dialer).encode()
        given = message.proof.encode() if isinstance(message, Auth) else b""
        if not hmac.compare_digest(given, expected):
            raise self._refuse(
                "auth_failed", "the mesh secret does not match", "authentication failed"
            )
        self.state = State.DONE
        return []

    @staticmethod
    def _refuse(code: str, told: str, detail: str) -> HandshakeFailed:
        """We refuse the peer: an error frame with `code` and `told`, our end says `detail`."""
        return HandshakeFailed(LinkEnd(EndReason.PROTOCOL, detail, sent=code), Error(code, told))
