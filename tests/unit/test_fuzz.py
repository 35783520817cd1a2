"""Property-based fuzzing of the frame decoder and the message validator (issue 6).

Hostile input of every shape: arbitrary bytes, arbitrary JSON values, valid
frames of every message type mutated (bytes flipped, inserted, cut; fields
given wrong types or huge values), and the same streams split at every
boundary. What must hold:

- FrameDecoder and decode() raise nothing but ProtocolError (and its kinds);
- after a drain, the decoder holds less than one frame (cap plus prefix);
- however a stream is cut into reads, the same frames and error come out;
- every valid message round-trips, and whatever decode() accepts, encode()
  can send again unchanged.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.hostile import HOSTILE_VALUES
from node.errors import BadRequest
from node.http import parse_request
from shared import wire
from shared.framing import FrameDecoder, encode_frame, frame

# DESIGN.md, "Timing": no deadline, a bounded number of examples (fewer in CI)
settings.register_profile(
    "mesh-fuzz",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("mesh-fuzz-ci", settings.get_profile("mesh-fuzz"), max_examples=300)
FUZZ = settings.get_profile("mesh-fuzz-ci" if os.environ.get("CI") == "true" else "mesh-fuzz")

SMALL_CAP = 256  # a cap small enough that random prefixes and bodies run into it

# -- strategies ---------------------------------------------------------------

# every JSON value orjson can both read and write
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

hosts = st.one_of(
    st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,12}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
addresses = st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(1, 65535)).filter(
    lambda a: len(a) <= wire.MAX_ADDRESS
)
counts = st.integers(0, wire.MAX_INT - 1)
ids = st.text(min_size=1, max_size=wire.MAX_ID)
names = st.text(min_size=1, max_size=40) | st.text(min_size=wire.MAX_NAME, max_size=wire.MAX_NAME)
label_text = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", fullmatch=True)
label_lists = st.lists(label_text, max_size=4, unique=True).map(tuple)
members = st.builds(
    wire.Member,
    ids,
    names,
    addresses,
    counts,
    http=st.none() | addresses,
    services=label_lists,
    tags=label_lists,
    meta=st.dictionaries(label_text, st.text(max_size=40), max_size=4).map(
        lambda d: tuple(d.items())
    ),
    draining=st.booleans(),
)
member_lists = st.lists(members, max_size=4).map(tuple)


@st.composite
def hellos(draw: st.DrawFn) -> wire.Hello:
    version = draw(counts)
    record = draw(members)
    return wire.Hello(
        id=record.id,
        name=record.name,
        address=record.address,
        incarnation=record.incarnation,
        record=record,
        version=version,
        min_version=draw(st.integers(0, version)),
        nonce=draw(st.text(max_size=wire.MAX_NONCE)),
    )


MESSAGE_STRATEGIES: dict[type[wire.Message], st.SearchStrategy[wire.Message]] = {
    wire.Hello: hellos(),
    wire.Heartbeat: st.builds(wire.Heartbeat, st.text(max_size=wire.MAX_NONCE)),
    wire.Snapshot: st.builds(wire.Snapshot, ids, counts, member_lists, st.booleans()),
    wire.MemberJoined: st.builds(wire.MemberJoined, counts, members),
    wire.MemberLeft: st.builds(wire.MemberLeft, counts, members, st.text(min_size=1, max_size=32)),
    wire.Leave: st.just(wire.Leave()),
    wire.Request: st.builds(
        wire.Request, counts, st.text(min_size=1, max_size=wire.MAX_METHOD), json_values
    ),
    wire.Response: st.builds(
        wire.Response,
        counts,
        json_values,
        st.none() | st.text(max_size=wire.MAX_TEXT),
        st.none() | st.just("busy"),
    ),
    wire.Error: st.builds(
        wire.Error, st.text(min_size=1, max_size=64), st.text(max_size=wire.MAX_TEXT)
    ),
    wire.Auth: st.builds(wire.Auth, st.text("0123456789abcdef", min_size=64, max_size=64)),
    wire.Members: st.builds(
        wire.Members,
        member_lists,
        st.lists(
            st.builds(wire.Departure, ids, counts, st.floats(0, wire.MAX_INT, exclude_max=True)),
            max_size=3,
        ).map(tuple),
    ),
    wire.SyncRequest: st.just(wire.SyncRequest()),
    wire.Update: st.builds(wire.Update, members),
    wire.Deltas: st.builds(
        lambda first, events: wire.Deltas(
            first, tuple(event(first + i) for i, event in enumerate(events))
        ),
        st.integers(0, wire.MAX_INT - 8),
        st.lists(
            st.builds(lambda m: lambda v: wire.MemberJoined(v, m), members)
            | st.builds(
                lambda m, r: lambda v: wire.MemberLeft(v, m, r),
                members,
                st.text(min_size=1, max_size=32),
            ),
            min_size=1,
            max_size=8,
        ),
    ),
    wire.LinkReport: st.builds(
        wire.LinkReport,
        st.lists(
            st.builds(
                wire.BrokenLink,
                ids,
                st.sampled_from(["connecting", "retrying"]),
                st.floats(0, wire.MAX_INT, exclude_max=True),
            ),
            max_size=3,
        ).map(tuple),
    ),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def heard(message: wire.Message) -> list[wire.Message]:
    """What a reader takes out of the frame of `message`: a batch of deltas, one by one."""
    return list(message.events) if isinstance(message, wire.Deltas) else [message]


# values a field should never hold: wrong types, huge and negative numbers, huge text
hostile_values = st.one_of(
    json_values,
    st.sampled_from([*HOSTILE_VALUES, "x" * 70_000, "\x00\n\u2028"]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(min_size=wire.MAX_ADDRESS, max_size=wire.MAX_ADDRESS + 2),
)


def nested(depth: int, inner: Any = None) -> Any:
    value = inner
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# -- running a stream through the decoder ---------------------------------------


def run_stream(chunks: Iterable[bytes], max_frame: int = SMALL_CAP) -> list[Any]:
    """What a link would see: messages, then the error that ends the stream, if any.

    An unknown type is recorded and skipped (a newer peer's link goes on after it);
    any other ProtocolError ends the stream. Nothing else may escape. After every
    drain, the decoder holds less than one whole frame.
    """
    decoder = FrameDecoder(max_frame)
    out: list[Any] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while True:
            try:
                message = decoder.next_message()
            except wire.UnknownMessageType as exc:
                out.append(("unknown", exc.type_name))
                continue
            except wire.ProtocolError as exc:
                out.append(("error", type(exc).__name__, str(exc)))
                return out
            if message is None:
                break
            out.append(message)
        assert decoder.buffered < 4 + max_frame, (decoder.buffered, max_frame)
    return out


def decode_or_refuse(body: bytes) -> wire.Message | None:
    """decode(body), or None when it is refused; only ProtocolError may be raised.

    Whatever it accepts must round-trip: encode() can send it again, unchanged.
    """
    try:
        message = wire.decode(body)
    except wire.ProtocolError:
        return None
    assert isinstance(message, wire.Message)
    assert type(message) is wire.MESSAGE_TYPES[message.TYPE]
    assert wire.decode(wire.encode(message)) == message
    return message


def raw_frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


# -- the decoder on arbitrary input ---------------------------------------------


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([SMALL_CAP, 4096, 1024 * 1024]))
def test_arbitrary_bytes_only_ever_raise_protocol_errors(data: bytes, cap: int) -> None:
    run_stream([data], cap)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=40))
def test_arbitrary_reads_only_ever_raise_protocol_errors(chunks: list[bytes]) -> None:
    run_stream(chunks)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.binary(max_size=600), st.sampled_from([0, 1, 100, SMALL_CAP]))
def test_any_length_prefix(length: int, body: bytes, cap: int) -> None:
    """A prefix over the cap is refused at once, whatever follows; under it, the body waits."""
    decoder = FrameDecoder(cap)
    decoder.feed(struct.pack(">I", length) + body)
    if length > cap:
        with pytest.raises(wire.FrameTooLarge):
            decoder.next_message()
        return
    if len(body) < length:
        assert decoder.next_message() is None
        assert decoder.buffered == 4 + len(body) < 4 + cap
        return
    try:
        decoder.next_message()
    except wire.ProtocolError:
        pass
    assert decoder.buffered == len(body) - length  # exactly that frame was consumed


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    body = orjson.dumps(value)
    decode_or_refuse(body)
    run_stream([struct.pack(">I", len(body)) + body], max_frame=1024 * 1024)


@st.composite
def typed_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Objects of a known type with any of the known field names, holding any values."""
    known = ["id", "name", "address", "incarnation", "version", "min_version", "nonce"]
    known += ["digest", "epoch", "members", "last", "member", "reason", "method", "body"]
    known += ["error", "code", "message", "proof", "tombstones", "age"]
    obj = draw(st.dictionaries(st.sampled_from(known), hostile_values, max_size=8))
    obj["type"] = draw(st.sampled_from(list(wire.MESSAGE_TYPES)))
    return obj


@FUZZ
@given(typed_objects())
def test_known_types_with_arbitrary_fields(obj: dict[str, Any]) -> None:
    decode_or_refuse(orjson.dumps(obj))


# -- valid frames: round trips, and the same stream however it is cut -------------


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGE_STRATEGIES) == set(wire.MESSAGE_TYPES.values())


@FUZZ
@given(messages)
def test_valid_messages_round_trip(message: wire.Message) -> None:
    for version in (
        wire.MIN_PROTOCOL_VERSION,
        wire.PROTOCOL_VERSION,
    ):  # records as objects, as arrays
        assert wire.decode(wire.encode(message, version)) == message
        frames = [encode_frame(message, 1024 * 1024, version)]
        assert run_stream(frames, max_frame=1024 * 1024) == heard(message)


@FUZZ
@given(st.lists(messages, min_size=1, max_size=8), st.data())
def test_valid_streams_in_random_reads(batch: list[wire.Message], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert run_stream(chunks, max_frame=1024 * 1024) == [m for b in batch for m in heard(b)]


@st.composite
def hostile_streams(draw: st.DrawFn) -> bytes:
    """Valid frames, garbage and frames of the wrong shape, one after another."""
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["valid", "valid", "json", "bytes", "prefix", "unknown"]))
        if kind == "valid":
            parts.append(
                encode_frame(draw(MESSAGE_STRATEGIES[wire.Heartbeat] | st.just(wire.Leave())))
            )
        elif kind == "json":
            parts.append(raw_frame(draw(json_values)))
        elif kind == "bytes":
            parts.append(draw(st.binary(max_size=40)))
        elif kind == "prefix":
            parts.append(struct.pack(">I", draw(st.integers(0, 2**32 - 1))))
        else:
            parts.append(raw_frame({"type": draw(st.text(min_size=1, max_size=10))}))
    return b"".join(parts)


@FUZZ
@given(hostile_streams())
def test_every_two_way_split_gives_the_same_frames_and_error(stream: bytes) -> None:
    whole = run_stream([stream])
    for i in range(len(stream) + 1):
        assert run_stream([stream[:i], stream[i:]]) == whole, f"split at {i}"
    assert run_stream([stream[i : i + 1] for i in range(len(stream))]) == whole


@FUZZ
@given(hostile_streams(), st.data())
def test_random_reads_give_the_same_frames_and_error(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert run_stream(chunks) == run_stream([stream])


# -- mutated valid frames ---------------------------------------------------------


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame of any type, then damaged: its bytes, its prefix or one field."""
    message = draw(messages)
    body = wire.encode(message)
    how = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "prefix", "field"]))
    if how == "field":
        obj = message.to_dict()
        key = draw(st.sampled_from(sorted(obj)))
        obj[key] = draw(hostile_values)
        member = obj.get("member")
        if draw(st.booleans()) and isinstance(member, dict) and member:
            member[draw(st.sampled_from(sorted(member)))] = draw(hostile_values)
        return raw_frame(obj)
    data = bytearray(struct.pack(">I", len(body)) + body)
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            spot = draw(st.integers(0, len(data) - 1))
            data[spot] ^= draw(st.integers(1, 255))
    elif how == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    elif how == "delete":
        del data[at : at + draw(st.integers(1, 16))]
    elif how == "truncate":
        del data[at:]
    else:  # a length prefix that lies
        data[:4] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
    return bytes(data)


@FUZZ
@given(mutated_frames(), st.sampled_from([SMALL_CAP, 1024 * 1024]))
def test_mutated_frames_only_ever_raise_protocol_errors(data: bytes, cap: int) -> None:
    out = run_stream([data], cap)
    for item in out:
        if isinstance(item, wire.Message):  # a mutation that still validates still round-trips
            assert wire.decode(wire.encode(item)) == item
    if len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        if 4 + length <= len(data) and length <= cap:
            decode_or_refuse(data[4 : 4 + length])


@FUZZ
@given(mutated_frames(), st.data())
def test_mutated_frames_come_out_the_same_however_they_are_read(
    data: bytes, draw: st.DataObject
) -> None:
    stream = data + encode_frame(wire.Heartbeat())
    whole = run_stream([stream], max_frame=1024 * 1024)
    i = draw.draw(st.integers(0, len(stream)))
    assert run_stream([stream[:i], stream[i:]], max_frame=1024 * 1024) == whole


# -- nesting, the cap's edges -------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 100, 250, 252, 253, 254, 255, 300, 1000, 1023, 1024, 5000])
@pytest.mark.parametrize("kind", ["request", "response", "heartbeat"])
def test_deep_nesting_is_refused_or_round_trips(depth: int, kind: str) -> None:
    """orjson reads JSON nested 1024 deep but writes only 254: decode() must not accept
    a frame that encode() cannot send again (an echo of it would fail, an HTTP answer 500)."""
    key = b"extra" if kind == "heartbeat" else b"body"  # a heartbeat ignores unknown fields
    body = b'{"type":"%s","id":1,"method":"echo","%s":' % (kind.encode(), key)
    body += b"[" * depth + b"]" * depth + b"}"
    message = decode_or_refuse(body)
    if depth < 250:
        assert message is not None  # ordinary nesting is accepted


@FUZZ
@given(st.integers(0, 600), json_scalars)
def test_any_nesting_depth(depth: int, leaf: Any) -> None:
    body = b'{"type":"request","id":1,"method":"echo","body":'
    body += b"[" * depth + orjson.dumps(leaf) + b"]" * depth + b"}"
    decode_or_refuse(body)
    run_stream([struct.pack(">I", len(body)) + body], max_frame=1024 * 1024)


@FUZZ
@given(st.integers(0, 64), st.integers(0, 8))
def test_a_frame_at_the_cap_passes_and_one_byte_over_does_not(pad: int, extra: int) -> None:
    data = encode_frame(wire.Request(1, "echo", "x" * pad))
    cap = len(data) - 4
    assert run_stream([data], cap) == [wire.Request(1, "echo", "x" * pad)]
    out = run_stream([frame(b" " * (cap + 1 + extra), cap + 1 + extra)], cap)
    assert out and out[0][:2] == ("error", "FrameTooLarge")


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), st.binary(max_size=300))
def test_garbage_after_a_good_frame_keeps_the_good_frame(prefixes: list[int], tail: bytes) -> None:
    good = encode_frame(wire.Heartbeat("1:ab"))
    garbage = b"".join(struct.pack(">I", p) for p in prefixes) + tail
    assert run_stream([good + garbage])[0] == wire.Heartbeat("1:ab")


# -- the HTTP edge that turns JSON into request frames --------------------------------


@st.composite
def request_documents(draw: st.DrawFn) -> bytes:
    doc = draw(
        st.dictionaries(
            st.sampled_from(["to", "service", "method", "body", "timeout"]), hostile_values
        )
    )
    raw = orjson.dumps(doc)
    if draw(st.booleans()):  # a body nested around orjson's limits, written by hand
        depth = draw(st.integers(0, 1100))
        body = b"[" * depth + orjson.dumps(doc.pop("body", None)) + b"]" * depth
        raw = orjson.dumps(doc)[:-1] + (b"," if doc else b"") + b'"body":' + body + b"}"
    return raw


@FUZZ
@given(st.binary(max_size=300) | json_values.map(orjson.dumps) | request_documents())
def test_http_request_bodies_are_refused_or_can_be_framed(raw: bytes) -> None:
    """POST /v1/request: a bad body is a BadRequest (400), never another exception; a good
    one always makes a request frame (no TypeError, an HTTP 500, on the way out)."""
    try:
        _, _, method, body, timeout = parse_request(raw, 5.0)
    except BadRequest:
        return
    assert 0 < timeout <= 300
    message = wire.Request(1, method[: wire.MAX_METHOD], body)
    assert wire.decode(wire.encode(message)) == message
