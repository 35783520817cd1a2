"""shared/wire.py: every message type round-trips; every field is validated."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared.wire import (
    MAX_ID,
    MAX_INT,
    MAX_METHOD,
    MAX_NAME,
    MAX_TEXT,
    MESSAGE_TYPES,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    BrokenLink,
    Deltas,
    Departure,
    Error,
    Heartbeat,
    Hello,
    Leave,
    LinkReport,
    Member,
    MemberJoined,
    MemberLeft,
    Members,
    Message,
    ProtocolError,
    Request,
    Response,
    Snapshot,
    SyncRequest,
    UnknownMessageType,
    Update,
    decode,
    encode,
    is_port,
    parse_address,
    versions_overlap,
)

A = Member("id-a", "alpha", "10.0.0.1:9010", 2)
B = Member("id-b", "beta", "[::1]:9011", 0)
GOODS = Member(
    "id-g",
    "goods-1",
    "10.0.0.3:9010",
    4,
    http="10.0.0.3:9110",
    services=("goods", "stock"),
    tags=("v2", "zone-a"),
    meta=(("zone-a", "x"), ("owner", "team=shop")),
    draining=True,
)

SAMPLES: list[Message] = [
    Hello(id="id-a", name="alpha", address="10.0.0.1:9010", incarnation=7),
    Hello(id="id-a", name="alpha", address="h:1", incarnation=0, version=5, min_version=2),
    Heartbeat(),
    Snapshot("epoch-1", 17, (A, B)),
    Snapshot("epoch-1", 17, (A,), last=False),
    Snapshot("epoch-1", 0, ()),
    MemberJoined(3, A),
    MemberLeft(4, B, "timeout"),
    MemberLeft(5, A, "leave"),
    Leave(),
    Request(9, "echo", {"nested": [1, 2.5, None, "x", {"k": True}]}),
    Request(0, "ping", None),
    Response(9, body={"ok": 1}),
    Response(10, error="boom"),
    Error("stale_incarnation", "incarnation 1 is not newer than 2"),
    Error("full", ""),
    Auth("ab12" * 16),
    Heartbeat("3:0123abcd"),
    Members((A, B), (Departure("id-c", 4, 1.5),)),
    Members(()),
    SyncRequest(),
    Hello.of(GOODS),
    Snapshot("epoch-1", 18, (A, GOODS)),
    MemberJoined(6, GOODS),
    Members((GOODS,)),
    Update(GOODS),
    Response(11, error="busy here", code="busy"),
    LinkReport((BrokenLink("id-b", "retrying", 1764604800.5),)),
    LinkReport(),
    Deltas(7, (MemberJoined(7, A), MemberLeft(8, GOODS, "timeout"), MemberJoined(9, GOODS))),
]


def dec(obj: Any) -> Message:
    return decode(orjson.dumps(obj))


def hello_dict(**overrides: Any) -> dict[str, Any]:
    obj = {
        "type": "hello",
        "version": 1,
        "min_version": 1,
        "id": "id-a",
        "name": "alpha",
        "address": "10.0.0.1:9010",
        "incarnation": 0,
    }
    obj.update(overrides)
    return obj


def member_dict(**overrides: Any) -> dict[str, Any]:
    obj = {"id": "id-a", "name": "alpha", "address": "10.0.0.1:9010", "incarnation": 0}
    obj.update(overrides)
    return obj


# -- round trips ------------------------------------------------------------


@pytest.mark.parametrize("version", [MIN_PROTOCOL_VERSION, PROTOCOL_VERSION])
@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message, version: int) -> None:
    body = encode(message, version)
    assert orjson.loads(body)["type"] == message.TYPE
    again = decode(body)
    assert type(again) is type(message)
    assert again == message


def test_every_registered_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(MESSAGE_TYPES.values())


def test_message_enum_is_only_appended_to() -> None:
    # the order of a deployed protocol's types never changes
    assert list(MESSAGE_TYPES)[:9] == [
        "hello",
        "heartbeat",
        "snapshot",
        "member_joined",
        "member_left",
        "leave",
        "request",
        "response",
        "error",
    ]


def test_messages_are_frozen_and_slotted() -> None:
    hello = SAMPLES[0]
    with pytest.raises(AttributeError):
        hello.id = "other"  # type: ignore[misc]
    assert not hasattr(hello, "__dict__")


def test_hello_member_property() -> None:
    hello = Hello(id="x", name="n", address="h:5", incarnation=4)
    assert hello.member == Member("x", "n", "h:5", 4)


def test_hello_defaults_to_our_versions() -> None:
    hello = Hello(id="x", name="n", address="h:5")
    assert (hello.version, hello.min_version) == (PROTOCOL_VERSION, MIN_PROTOCOL_VERSION)


def test_unknown_fields_are_ignored() -> None:
    message = dec(hello_dict(future_field={"a": 1}, metadata="x"))
    assert message == Hello(
        id="id-a", name="alpha", address="10.0.0.1:9010", version=1, min_version=1
    )
    snapshot = dec(
        {
            "type": "snapshot",
            "epoch": "e",
            "version": 1,
            "members": [member_dict(metadata={"zone": "a"})],
            "extra": 1,
        }
    )
    assert isinstance(snapshot, Snapshot)
    assert snapshot.members == (Member("id-a", "alpha", "10.0.0.1:9010", 0),)
    assert dec({"type": "heartbeat", "digest": "abc", "count": 3}) == Heartbeat("abc")
    assert dec({"type": "heartbeat", "count": 3}) == Heartbeat()


def test_snapshot_last_defaults_to_true() -> None:
    snapshot = dec({"type": "snapshot", "epoch": "e", "version": 1, "members": []})
    assert snapshot == Snapshot("e", 1, (), last=True)


def test_response_error_may_be_null_or_absent() -> None:
    assert dec({"type": "response", "id": 1, "body": 5}) == Response(1, body=5)
    assert dec({"type": "response", "id": 1, "body": 5, "error": None}) == Response(1, body=5)


def test_request_body_absent_is_none() -> None:
    assert dec({"type": "request", "id": 2, "method": "ping"}) == Request(2, "ping", None)


def test_unknown_type_names_itself_truncated() -> None:
    with pytest.raises(UnknownMessageType) as info:
        dec({"type": "x" * 500})
    assert info.value.type_name == "x" * 64


# -- field validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", None),
        ("id", 5),
        ("id", ""),
        ("id", "x" * (MAX_ID + 1)),
        ("name", None),
        ("name", ""),
        ("name", ["alpha"]),
        ("name", "n" * (MAX_NAME + 1)),
        ("incarnation", -1),
        ("incarnation", True),
        ("incarnation", False),
        ("incarnation", 1.0),
        ("incarnation", "1"),
        ("incarnation", None),
        ("incarnation", MAX_INT),
        ("version", -1),
        ("version", True),
        ("version", "1"),
        ("min_version", None),
        ("min_version", False),
        ("min_version", 2),  # above version
    ],
)
def test_hello_field_validation(field: str, value: Any) -> None:
    with pytest.raises(ProtocolError):
        dec(hello_dict(**{field: value}))


@pytest.mark.parametrize("field", ["id", "name", "address", "incarnation", "version"])
def test_hello_missing_field(field: str) -> None:
    obj = hello_dict()
    del obj[field]
    with pytest.raises(ProtocolError):
        dec(obj)


def test_hello_limits_are_inclusive() -> None:
    hello = dec(
        hello_dict(id="i" * MAX_ID, name="n" * MAX_NAME, incarnation=MAX_INT - 1, version=9)
    )
    assert isinstance(hello, Hello)
    assert hello.id == "i" * MAX_ID
    assert hello.incarnation == MAX_INT - 1


@pytest.mark.parametrize(
    "address",
    [
        "host",
        "host:",
        ":9010",
        "host:0",
        "host:65536",
        "host:70000",
        "host:-1",
        "host:+80",
        "host:80a",
        "host: 80",
        "",
        5,
        None,
        "h" * 300 + ":1",
    ],
)
def test_malformed_addresses_refused(address: Any) -> None:
    with pytest.raises(ProtocolError):
        dec(hello_dict(address=address))
    with pytest.raises(ProtocolError):
        Member.from_dict(member_dict(address=address))


@pytest.mark.parametrize(
    "address", ["host:1", "host:65535", "10.0.0.1:9010", "[::1]:9010", "[fe80::1%eth0]:80"]
)
def test_good_addresses_accepted(address: str) -> None:
    assert Member.from_dict(member_dict(address=address)).address == address


@pytest.mark.parametrize("address", ["host:\u00b2", "host:\u0669\u0660\u0661\u0660"])
def test_address_port_with_non_ascii_digits_is_a_protocol_error(address: str) -> None:
    # '\u00b2'.isdigit() is True but int() of it raises ValueError: decode must still
    # raise ProtocolError only, or the link's reader sees a stray ValueError
    with pytest.raises(ProtocolError):
        dec(hello_dict(address=address))


@pytest.mark.parametrize(
    "address", ["::1", "fe80::1", "::1:9010", "[::1:9010", "::1]:9010", "[::1]]:9010", "a[b:1"]
)
def test_unbracketed_ipv6_refused(address: str) -> None:
    # DESIGN: "an IPv6 host is bracketed"; 'fe80::1' is not host 'fe80:' port 1
    with pytest.raises(ProtocolError):
        dec(hello_dict(address=address))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("distributor:9000", ("distributor", 9000)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
        ("h:65535", ("h", 65535)),
        ("[::1]:9010", ("::1", 9010)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["host", "host:0", "host:70000", "[]:1", "::1", "host:٩٠", "host:²"]
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_is_port() -> None:
    assert is_port("1") and is_port("65535") and is_port("9010")
    assert not is_port("0") and is_port("0", zero=True)
    for bad in ("65536", "", "-1", "+1", " 1", "1.0", "٩", "²", "0x10"):
        assert not is_port(bad), bad
        assert not is_port(bad, zero=True), bad


@pytest.mark.parametrize("bad", [None, [], "member", 3])
def test_member_must_be_an_object(bad: Any) -> None:
    with pytest.raises(ProtocolError):
        dec({"type": "member_joined", "version": 1, "member": bad})


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "snapshot", "epoch": "", "version": 1, "members": []},
        {"type": "snapshot", "epoch": "e" * (MAX_ID + 1), "version": 1, "members": []},
        {"type": "snapshot", "epoch": 7, "version": 1, "members": []},
        {"type": "snapshot", "epoch": "e", "version": -1, "members": []},
        {"type": "snapshot", "epoch": "e", "version": True, "members": []},
        {"type": "snapshot", "epoch": "e", "version": 1, "members": None},
        {"type": "snapshot", "epoch": "e", "version": 1, "members": [None]},
        {"type": "snapshot", "epoch": "e", "version": 1, "members": [{"id": "x"}]},
        {"type": "snapshot", "epoch": "e", "version": 1, "members": [], "last": 1},
        {"type": "snapshot", "epoch": "e", "version": 1, "members": [], "last": "true"},
        {"type": "snapshot", "epoch": "e", "version": 1, "members": [], "last": None},
        {"type": "member_joined", "member": member_dict()},
        {"type": "member_joined", "version": "2", "member": member_dict()},
        {"type": "member_joined", "version": 2, "member": member_dict(incarnation=-3)},
        {"type": "member_left", "version": 2, "member": member_dict()},  # no reason
        {"type": "member_left", "version": 2, "member": member_dict(), "reason": 1},
        {"type": "member_left", "version": False, "member": member_dict(), "reason": "leave"},
        {"type": "request", "method": "echo"},
        {"type": "request", "id": 1.5, "method": "echo"},
        {"type": "request", "id": 1, "method": None},
        {"type": "request", "id": 1, "method": "m" * (MAX_METHOD + 1)},
        {"type": "response", "id": "1"},
        {"type": "response", "id": 1, "error": 5},
        {"type": "response", "id": 1, "error": "e" * (MAX_TEXT + 1)},
        {"type": "error", "message": "x"},
        {"type": "error", "code": "", "message": "x"},
        {"type": "error", "code": "full"},
        {"type": "error", "code": "full", "message": "m" * (MAX_TEXT + 1)},
    ],
)
def test_field_validation(obj: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        dec(obj)
    assert not isinstance(info.value, UnknownMessageType)


def test_member_left_accepts_every_reason() -> None:
    for reason in ("leave", "closed", "timeout", "protocol"):
        message = dec(
            {"type": "member_left", "version": 1, "member": member_dict(), "reason": reason}
        )
        assert isinstance(message, MemberLeft)
        assert message.reason == reason


def test_error_with_unknown_code_is_kept() -> None:
    # a newer peer's code is still worth logging
    assert dec({"type": "error", "code": "new_code", "message": ""}) == Error("new_code", "")


def test_method_at_limit_accepted() -> None:
    message = dec({"type": "request", "id": 1, "method": "m" * MAX_METHOD})
    assert message == Request(1, "m" * MAX_METHOD)


# -- versions -----------------------------------------------------------------


def make_hello(version: int, min_version: int) -> Hello:
    return Hello(id="x", name="n", address="h:1", version=version, min_version=min_version)


def test_versions_overlap_with_ours() -> None:
    assert versions_overlap(make_hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION))
    # a newer peer that still accepts our version
    assert versions_overlap(make_hello(PROTOCOL_VERSION + 3, PROTOCOL_VERSION))
    # an older peer whose top is our oldest
    assert versions_overlap(make_hello(MIN_PROTOCOL_VERSION, 0))


def test_versions_do_not_overlap() -> None:
    # a newer peer that no longer accepts our version
    assert not versions_overlap(make_hello(PROTOCOL_VERSION + 5, PROTOCOL_VERSION + 1))
    # an older peer entirely below our oldest
    assert not versions_overlap(make_hello(MIN_PROTOCOL_VERSION - 1, 0))


def test_a_newer_leave_reason_is_kept_as_text() -> None:
    # a newer distributor may add reasons; an older node must not drop its link over one
    message = dec({"type": "member_left", "version": 2, "member": member_dict(), "reason": "moved"})
    assert isinstance(message, MemberLeft) and message.reason == "moved"


def test_an_address_no_resolver_accepts_is_refused() -> None:
    with pytest.raises(ProtocolError):
        dec(hello_dict(address="a" * 64 + ".example:9000"))


def test_an_auth_proof_must_be_ascii_hex() -> None:
    with pytest.raises(ProtocolError):
        dec({"type": "auth", "proof": "é" * 64})
