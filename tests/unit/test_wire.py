"""shared/wire.py: every message type round-trips; every field is validated."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared import wire

A = wire.Member("id-a", "alpha", "10.0.0.1:9010", 2)
B = wire.Member("id-b", "beta", "[::1]:9011", 0)
GOODS = wire.Member(
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

SAMPLES: list[wire.Message] = [
    wire.Hello(id="id-a", name="alpha", address="10.0.0.1:9010", incarnation=7),
    wire.Hello(id="id-a", name="alpha", address="h:1", incarnation=0, version=5, min_version=2),
    wire.Heartbeat(),
    wire.Snapshot("epoch-1", 17, (A, B)),
    wire.Snapshot("epoch-1", 17, (A,), last=False),
    wire.Snapshot("epoch-1", 0, ()),
    wire.MemberJoined(3, A),
    wire.MemberLeft(4, B, "timeout"),
    wire.MemberLeft(5, A, "leave"),
    wire.Leave(),
    wire.Request(9, "echo", {"nested": [1, 2.5, None, "x", {"k": True}]}),
    wire.Request(0, "ping", None),
    wire.Response(9, body={"ok": 1}),
    wire.Response(10, error="boom"),
    wire.Error("stale_incarnation", "incarnation 1 is not newer than 2"),
    wire.Error("full", ""),
    wire.Auth("ab12" * 16),
    wire.Heartbeat("3:0123abcd"),
    wire.Members((A, B), (wire.Departure("id-c", 4, 1.5),)),
    wire.Members(()),
    wire.SyncRequest(),
    wire.Hello.of(GOODS),
    wire.Snapshot("epoch-1", 18, (A, GOODS)),
    wire.MemberJoined(6, GOODS),
    wire.Members((GOODS,)),
    wire.Update(GOODS),
    wire.Response(11, error="busy here", code="busy"),
    wire.LinkReport((wire.BrokenLink("id-b", "retrying", 1764604800.5),)),
    wire.LinkReport(),
    wire.Deltas(
        7,
        (
            wire.MemberJoined(7, A),
            wire.MemberLeft(8, GOODS, "timeout"),
            wire.MemberJoined(9, GOODS),
        ),
    ),
]


def dec(obj: Any) -> wire.Message:
    return wire.decode(orjson.dumps(obj))


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


@pytest.mark.parametrize("version", [wire.MIN_PROTOCOL_VERSION, wire.PROTOCOL_VERSION])
@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: wire.Message, version: int) -> None:
    body = wire.encode(message, version)
    assert orjson.loads(body)["type"] == message.TYPE
    again = wire.decode(body)
    assert type(again) is type(message)
    assert again == message


def test_every_registered_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(wire.MESSAGE_TYPES.values())


def test_message_enum_is_only_appended_to() -> None:
    # the order of a deployed protocol's types never changes
    assert list(wire.MESSAGE_TYPES)[:9] == [
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
    hello = wire.Hello(id="x", name="n", address="h:5", incarnation=4)
    assert hello.member == wire.Member("x", "n", "h:5", 4)


def test_hello_defaults_to_our_versions() -> None:
    hello = wire.Hello(id="x", name="n", address="h:5")
    assert (hello.version, hello.min_version) == (wire.PROTOCOL_VERSION, wire.MIN_PROTOCOL_VERSION)


def test_unknown_fields_are_ignored() -> None:
    message = dec(hello_dict(future_field={"a": 1}, metadata="x"))
    assert message == wire.Hello(
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
    assert isinstance(snapshot, wire.Snapshot)
    assert snapshot.members == (wire.Member("id-a", "alpha", "10.0.0.1:9010", 0),)
    assert dec({"type": "heartbeat", "digest": "abc", "count": 3}) == wire.Heartbeat("abc")
    assert dec({"type": "heartbeat", "count": 3}) == wire.Heartbeat()


def test_snapshot_last_defaults_to_true() -> None:
    snapshot = dec({"type": "snapshot", "epoch": "e", "version": 1, "members": []})
    assert snapshot == wire.Snapshot("e", 1, (), last=True)


def test_response_error_may_be_null_or_absent() -> None:
    assert dec({"type": "response", "id": 1, "body": 5}) == wire.Response(1, body=5)
    assert dec({"type": "response", "id": 1, "body": 5, "error": None}) == wire.Response(1, body=5)


def test_request_body_absent_is_none() -> None:
    assert dec({"type": "request", "id": 2, "method": "ping"}) == wire.Request(2, "ping", None)


def test_unknown_type_names_itself_truncated() -> None:
    with pytest.raises(wire.UnknownMessageType) as info:
        dec({"type": "x" * 500})
    assert info.value.type_name == "x" * 64


# -- field validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", None),
        ("id", 5),
        ("id", ""),
        ("id", "x" * (wire.MAX_ID + 1)),
        ("name", None),
        ("name", ""),
        ("name", ["alpha"]),
        ("name", "n" * (wire.MAX_NAME + 1)),
        ("incarnation", -1),
        ("incarnation", True),
        ("incarnation", False),
        ("incarnation", 1.0),
        ("incarnation", "1"),
        ("incarnation", None),
        ("incarnation", wire.MAX_INT),
        ("version", -1),
        ("version", True),
        ("version", "1"),
        ("min_version", None),
        ("min_version", False),
        ("min_version", 2),  # above version
    ],
)
def test_hello_field_validation(field: str, value: Any) -> None:
    with pytest.raises(wire.ProtocolError):
        dec(hello_dict(**{field: value}))


@pytest.mark.parametrize("field", ["id", "name", "address", "incarnation", "version"])
def test_hello_missing_field(field: str) -> None:
    obj = hello_dict()
    del obj[field]
    with pytest.raises(wire.ProtocolError):
        dec(obj)


def test_hello_limits_are_inclusive() -> None:
    hello = dec(
        hello_dict(
            id="i" * wire.MAX_ID, name="n" * wire.MAX_NAME, incarnation=wire.MAX_INT - 1, version=9
        )
    )
    assert isinstance(hello, wire.Hello)
    assert hello.id == "i" * wire.MAX_ID
    assert hello.incarnation == wire.MAX_INT - 1


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
    with pytest.raises(wire.ProtocolError):
        dec(hello_dict(address=address))
    with pytest.raises(wire.ProtocolError):
        wire.Member.from_dict(member_dict(address=address))


@pytest.mark.parametrize(
    "address", ["host:1", "host:65535", "10.0.0.1:9010", "[::1]:9010", "[fe80::1%eth0]:80"]
)
def test_good_addresses_accepted(address: str) -> None:
    assert wire.Member.from_dict(member_dict(address=address)).address == address


@pytest.mark.parametrize("address", ["host:\u00b2", "host:\u0669\u0660\u0661\u0660"])
def test_address_port_with_non_ascii_digits_is_a_protocol_error(address: str) -> None:
    # '\u00b2'.isdigit() is True but int() of it raises ValueError: decode must still
    # raise ProtocolError only, or the link's reader sees a stray ValueError
    with pytest.raises(wire.ProtocolError):
        dec(hello_dict(address=address))


@pytest.mark.parametrize(
    "address", ["::1", "fe80::1", "::1:9010", "[::1:9010", "::1]:9010", "[::1]]:9010", "a[b:1"]
)
def test_unbracketed_ipv6_refused(address: str) -> None:
    # DESIGN: "an IPv6 host is bracketed"; 'fe80::1' is not host 'fe80:' port 1
    with pytest.raises(wire.ProtocolError):
        dec(hello_dict(address=address))


# good addresses and the (host, port) each splits into
GOOD_ADDRESSES = [
    ("distributor:9000", ("distributor", 9000)),
    ("10.0.0.1:1", ("10.0.0.1", 1)),
    ("h:65535", ("h", 65535)),
    ("[::1]:9010", ("::1", 9010)),
    ("[fe80::1:2]:80", ("fe80::1:2", 80)),
    ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
]


@pytest.mark.parametrize("text, expected", GOOD_ADDRESSES)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert wire.parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["host", "host:0", "host:70000", "[]:1", "::1", "host:٩٠", "host:²"]
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        wire.parse_address(text)


def test_is_port() -> None:
    assert wire.is_port("1") and wire.is_port("65535") and wire.is_port("9010")
    assert not wire.is_port("0") and wire.is_port("0", zero=True)
    for bad in ("65536", "", "-1", "+1", " 1", "1.0", "٩", "²", "0x10"):
        assert not wire.is_port(bad), bad
        assert not wire.is_port(bad, zero=True), bad


@pytest.mark.parametrize("bad", [None, [], "member", 3])
def test_member_must_be_an_object(bad: Any) -> None:
    with pytest.raises(wire.ProtocolError):
        dec({"type": "member_joined", "version": 1, "member": bad})


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "snapshot", "epoch": "", "version": 1, "members": []},
        {"type": "snapshot", "epoch": "e" * (wire.MAX_ID + 1), "version": 1, "members": []},
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
        {"type": "request", "id": 1, "method": "m" * (wire.MAX_METHOD + 1)},
        {"type": "response", "id": "1"},
        {"type": "response", "id": 1, "error": 5},
        {"type": "response", "id": 1, "error": "e" * (wire.MAX_TEXT + 1)},
        {"type": "error", "message": "x"},
        {"type": "error", "code": "", "message": "x"},
        {"type": "error", "code": "full"},
        {"type": "error", "code": "full", "message": "m" * (wire.MAX_TEXT + 1)},
    ],
)
def test_field_validation(obj: dict[str, Any]) -> None:
    with pytest.raises(wire.ProtocolError) as info:
        dec(obj)
    assert not isinstance(info.value, wire.UnknownMessageType)


def test_member_left_accepts_every_reason() -> None:
    for reason in ("leave", "closed", "timeout", "protocol"):
        message = dec(
            {"type": "member_left", "version": 1, "member": member_dict(), "reason": reason}
        )
        assert isinstance(message, wire.MemberLeft)
        assert message.reason == reason


def test_error_with_unknown_code_is_kept() -> None:
    # a newer peer's code is still worth logging
    assert dec({"type": "error", "code": "new_code", "message": ""}) == wire.Error("new_code", "")


def test_method_at_limit_accepted() -> None:
    message = dec({"type": "request", "id": 1, "method": "m" * wire.MAX_METHOD})
    assert message == wire.Request(1, "m" * wire.MAX_METHOD)


# -- versions -----------------------------------------------------------------


def make_hello(version: int, min_version: int) -> wire.Hello:
    return wire.Hello(id="x", name="n", address="h:1", version=version, min_version=min_version)


def test_versions_overlap_with_ours() -> None:
    assert wire.versions_overlap(make_hello(wire.PROTOCOL_VERSION, wire.MIN_PROTOCOL_VERSION))
    # a newer peer that still accepts our version
    assert wire.versions_overlap(make_hello(wire.PROTOCOL_VERSION + 3, wire.PROTOCOL_VERSION))
    # an older peer whose top is our oldest
    assert wire.versions_overlap(make_hello(wire.MIN_PROTOCOL_VERSION, 0))


def test_versions_do_not_overlap() -> None:
    # a newer peer that no longer accepts our version
    assert not wire.versions_overlap(
        make_hello(wire.PROTOCOL_VERSION + 5, wire.PROTOCOL_VERSION + 1)
    )
    # an older peer entirely below our oldest
    assert not wire.versions_overlap(make_hello(wire.MIN_PROTOCOL_VERSION - 1, 0))


def test_a_newer_leave_reason_is_kept_as_text() -> None:
    # a newer distributor may add reasons; an older node must not drop its link over one
    message = dec({"type": "member_left", "version": 2, "member": member_dict(), "reason": "moved"})
    assert isinstance(message, wire.MemberLeft) and message.reason == "moved"


def test_an_address_no_resolver_accepts_is_refused() -> None:
    with pytest.raises(wire.ProtocolError):
        dec(hello_dict(address="a" * 64 + ".example:9000"))


def test_an_auth_proof_must_be_ascii_hex() -> None:
    with pytest.raises(wire.ProtocolError):
        dec({"type": "auth", "proof": "é" * 64})
