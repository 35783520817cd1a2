"""shared/handshake.py: a link's opening, driven in memory with no socket."""

from __future__ import annotations

import pytest

from shared.handshake import NONCE_BYTES, Handshake, HandshakeFailed, auth_proof
from shared.linkend import EndReason
from shared.wire import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    Error,
    Heartbeat,
    Hello,
    Message,
    decode,
    encode,
)

DIALER = Hello(id="a" * 32, name="a", address="127.0.0.1:1")
ACCEPTER = Hello(id="b" * 32, name="b", address="127.0.0.1:2")
SECRET = b"mesh secret"


def nonce(char: str) -> str:
    return char * (2 * NONCE_BYTES)


def pair(
    dialer_secret: bytes | None = None, accepter_secret: bytes | None = None
) -> tuple[Handshake, Handshake]:
    dialer = Handshake(DIALER, dialer=True, secret=dialer_secret, nonce=nonce("1"))
    accepter = Handshake(ACCEPTER, dialer=False, secret=accepter_secret, nonce=nonce("2"))
    return dialer, accepter


def over_the_wire(frames: list[Message]) -> list[Message]:
    """What the other side decodes: the frames as bytes and back, as a Link moves them."""
    return [decode(encode(frame)) for frame in frames]


def run(dialer: Handshake, accepter: Handshake) -> None:
    """Pump frames both ways until neither side has anything left to say."""
    to_accepter = over_the_wire(dialer.start())
    to_dialer = over_the_wire(accepter.start())
    while to_accepter or to_dialer:
        for message in to_accepter:
            to_dialer += over_the_wire(accepter.receive(message))
        to_accepter = []
        for message in to_dialer:
            to_accepter += over_the_wire(dialer.receive(message))
        to_dialer = []


def test_the_dialer_speaks_first_and_the_accepter_answers_its_hello() -> None:
    dialer, accepter = pair()
    assert accepter.start() == []
    [hello] = dialer.start()
    assert isinstance(hello, Hello) and hello.id == DIALER.id and hello.nonce == nonce("1")
    [answer] = accepter.receive(decode(encode(hello)))
    assert isinstance(answer, Hello) and answer.id == ACCEPTER.id
    assert accepter.peer is not None and accepter.peer.id == DIALER.id
    assert dialer.peer is None  # not done before it heard back
    assert dialer.receive(decode(encode(answer))) == []
    assert dialer.peer is not None and dialer.peer.id == ACCEPTER.id


@pytest.mark.parametrize("secret", [None, SECRET])
def test_both_sides_end_holding_the_others_hello(secret: bytes | None) -> None:
    dialer, accepter = pair(secret, secret)
    run(dialer, accepter)
    assert dialer.peer is not None and dialer.peer.member == ACCEPTER.member
    assert accepter.peer is not None and accepter.peer.member == DIALER.member


def test_with_a_secret_neither_side_is_done_before_the_others_proof() -> None:
    dialer, accepter = pair(SECRET, SECRET)
    [hello] = dialer.start()
    answer, proof = accepter.receive(hello)
    assert isinstance(answer, Hello) and isinstance(proof, Auth)
    assert accepter.peer is None
    [dialer_proof] = dialer.receive(answer)
    assert isinstance(dialer_proof, Auth) and dialer.peer is None
    assert dialer.receive(proof) == [] and dialer.peer is not None
    assert accepter.receive(dialer_proof) == [] and accepter.peer is not None


def test_a_different_secret_is_refused_with_auth_failed() -> None:
    dialer, accepter = pair(SECRET, b"another secret")
    with pytest.raises(HandshakeFailed) as failed:
        run(dialer, accepter)
    assert failed.value.reply is not None and failed.value.reply.code == "auth_failed"
    assert failed.value.end.sent == "auth_failed"
    assert failed.value.end.reason is EndReason.PROTOCOL
    assert dialer.peer is None and accepter.peer is None


def test_a_proof_sent_back_to_its_author_is_refused() -> None:
    dialer, accepter = pair(SECRET, SECRET)
    [hello] = dialer.start()
    answer, _ = accepter.receive(hello)
    [own_proof] = dialer.receive(answer)
    with pytest.raises(HandshakeFailed) as failed:
        dialer.receive(own_proof)  # reflection: the dialer's own proof as the peer's
    assert failed.value.end.sent == "auth_failed"


def test_a_proof_is_bound_to_the_nonces_of_its_link() -> None:
    dialer, accepter = pair(SECRET, SECRET)
    [hello] = dialer.start()
    answer, _ = accepter.receive(hello)
    dialer.receive(answer)
    # a proof the accepter made on another link, for another dialer nonce
    old = Hello(id=DIALER.id, name="a", address=DIALER.address, nonce=nonce("9"))
    replayed = Auth(auth_proof(SECRET, accepter.mine, old, False))
    with pytest.raises(HandshakeFailed):
        dialer.receive(replayed)


@pytest.mark.parametrize(
    "bad",
    [
        Hello(id=ACCEPTER.id, name="b", address="127.0.0.1:2", nonce="short"),
        Hello(id=ACCEPTER.id, name="b", address="127.0.0.1:2"),  # no challenge at all
    ],
)
def test_with_a_secret_a_hello_without_a_fresh_nonce_is_refused(bad: Hello) -> None:
    dialer, _ = pair(SECRET, SECRET)
    dialer.start()
    with pytest.raises(HandshakeFailed) as failed:
        dialer.receive(bad)
    assert failed.value.reply == Error("auth_failed", "a hello with a fresh nonce is required")


def test_our_own_hello_sent_back_is_refused_with_a_secret() -> None:
    dialer, _ = pair(SECRET, SECRET)
    [hello] = dialer.start()
    with pytest.raises(HandshakeFailed) as failed:
        dialer.receive(hello)
    assert failed.value.end.sent == "auth_failed"


def speaking(oldest: int, newest: int) -> Hello:
    """The dialer's hello, from a release that speaks versions oldest..newest."""
    return Hello(DIALER.id, "a", DIALER.address, version=newest, min_version=oldest)


def test_versions_that_do_not_overlap_are_refused_with_unsupported_version() -> None:
    _, accepter = pair()
    with pytest.raises(HandshakeFailed) as failed:
        accepter.receive(speaking(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 2))
    reply = failed.value.reply
    assert reply is not None and reply.code == "unsupported_version"
    assert f"we speak {MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}" in reply.message
    assert accepter.peer is None


def test_a_newer_peer_whose_range_overlaps_is_accepted() -> None:
    _, accepter = pair()
    accepter.receive(speaking(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION + 1))
    assert accepter.peer is not None and accepter.peer.version == PROTOCOL_VERSION + 1


def test_anything_but_a_hello_first_ends_it_without_a_reply() -> None:
    _, accepter = pair()
    with pytest.raises(HandshakeFailed) as failed:
        accepter.receive(Heartbeat())
    assert failed.value.reply is None
    assert failed.value.end.detail == "expected hello, got heartbeat"


def test_an_error_frame_from_the_peer_ends_it_with_the_peers_code() -> None:
    dialer, _ = pair()
    dialer.start()
    with pytest.raises(HandshakeFailed) as failed:
        dialer.receive(Error("full", "too many connections in the handshake"))
    assert failed.value.reply is None
    assert failed.value.end.code == "full"
    assert failed.value.end.detail == "refused: full: too many connections in the handshake"


def test_a_message_after_the_handshake_is_not_its_business() -> None:
    dialer, accepter = pair()
    run(dialer, accepter)
    with pytest.raises(HandshakeFailed):
        dialer.receive(Heartbeat())


def test_auth_proofs_are_bound_to_direction_and_both_sides() -> None:
    a = Hello(id="a", name="a", address="h:1", nonce="1" * 64)
    b = Hello(id="b", name="b", address="h:2", nonce="2" * 64)
    sent_by_a = auth_proof(SECRET, a, b, True)
    assert sent_by_a == auth_proof(SECRET, a, b, True)
    # what a expects from b differs from what a sent: sending a's proof back fails
    assert sent_by_a != auth_proof(SECRET, b, a, False)
    assert sent_by_a != auth_proof(SECRET, a, b, False)
    assert sent_by_a != auth_proof(b"other", a, b, True)
