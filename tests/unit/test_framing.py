"""shared/framing.py: whole frames out of arbitrary reads, and the size cap."""

from __future__ import annotations

import struct

import orjson
import pytest

from shared.framing import FrameDecoder, encode_frame, frame
from shared.wire import (
    FrameTooLarge,
    Heartbeat,
    Hello,
    Member,
    MemberJoined,
    ProtocolError,
    Request,
    Response,
    Snapshot,
    UnknownMessageType,
)

HELLO = Hello(id="a1", name="alpha", address="10.0.0.1:9010", incarnation=3)


def raw_frame(obj: object) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


def drain(decoder: FrameDecoder) -> list:
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


def test_frame_is_length_prefix_then_body() -> None:
    data = frame(b"{}")
    assert data == b"\x00\x00\x00\x02{}"


def test_encode_frame_round_trips_through_decoder() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(HELLO))
    assert decoder.next_message() == HELLO
    assert decoder.next_message() is None
    assert decoder.buffered == 0


def test_empty_decoder_has_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.next_message() is None
    decoder.feed(b"")
    assert decoder.next_message() is None


def test_frame_fed_byte_by_byte() -> None:
    data = encode_frame(HELLO)
    decoder = FrameDecoder()
    for i, byte in enumerate(data):
        # nothing comes out until the very last byte is in
        assert decoder.next_message() is None
        decoder.feed(bytes([byte]))
        if i < len(data) - 1:
            assert decoder.next_message() is None
            assert decoder.buffered == i + 1
    assert decoder.next_message() == HELLO
    assert decoder.next_message() is None


def test_several_frames_in_one_read_come_out_in_order() -> None:
    messages = [HELLO, Heartbeat(), Request(1, "echo", {"x": 1}), Response(1, body={"x": 1})]
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_frame(m) for m in messages))
    assert drain(decoder) == messages


def test_reads_straddling_frame_boundaries() -> None:
    messages = [Request(i, "echo", {"i": i}) for i in range(20)]
    data = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out = []
    # chunks of 7 bytes cut length prefixes and bodies at every possible offset
    for start in range(0, len(data), 7):
        decoder.feed(data[start : start + 7])
        out.extend(drain(decoder))
    assert out == messages
    assert decoder.buffered == 0


def test_partial_frame_waits_and_keeps_earlier_whole_frames() -> None:
    first, second = encode_frame(Heartbeat()), encode_frame(HELLO)
    decoder = FrameDecoder()
    decoder.feed(first + second[:5])
    assert decoder.next_message() == Heartbeat()
    assert decoder.next_message() is None
    assert decoder.buffered == 5
    decoder.feed(second[5:])
    assert decoder.next_message() == HELLO


def test_oversize_frame_refused_as_soon_as_length_prefix_arrives() -> None:
    decoder = FrameDecoder(max_frame=100)
    decoder.feed(struct.pack(">I", 101)[:3])
    assert decoder.next_message() is None  # prefix not complete yet
    decoder.feed(struct.pack(">I", 101)[3:])
    # no body byte has arrived: the prefix alone is enough to refuse
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_frame_exactly_at_cap_is_accepted() -> None:
    message = Request(1, "echo", "x" * 40)
    data = encode_frame(message)
    body_length = len(data) - 4
    decoder = FrameDecoder(max_frame=body_length)
    decoder.feed(data)
    assert decoder.next_message() == message
    smaller = FrameDecoder(max_frame=body_length - 1)
    smaller.feed(data)
    with pytest.raises(FrameTooLarge):
        smaller.next_message()


def test_huge_length_prefix_refused_without_buffering() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_frame_too_large_is_a_protocol_error() -> None:
    assert issubclass(FrameTooLarge, ProtocolError)


def test_encoder_refuses_oversize() -> None:
    big = Request(1, "echo", "x" * 200)
    with pytest.raises(FrameTooLarge):
        encode_frame(big, max_frame=100)
    with pytest.raises(FrameTooLarge):
        frame(b"x" * 101, max_frame=100)
    assert frame(b"x" * 100, max_frame=100)[4:] == b"x" * 100


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{",
        b"\xff\xfe",  # not UTF-8
        b"",
    ],
)
def test_garbage_that_is_not_json(body: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolError):
        decoder.next_message()


@pytest.mark.parametrize("obj", [[1, 2], "hello", 42, None, True])
def test_json_that_is_not_an_object(obj: object) -> None:
    assert_refused_as_protocol_error(obj)


@pytest.mark.parametrize("obj", [{}, {"type": None}, {"type": 1}, {"type": ["hello"]}])
def test_missing_or_non_string_type(obj: dict) -> None:
    assert_refused_as_protocol_error(obj)


def test_unknown_type() -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame({"type": "gossip_v9", "payload": 1}))
    with pytest.raises(UnknownMessageType) as info:
        decoder.next_message()
    assert info.value.type_name == "gossip_v9"


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "request", "id": "1", "method": "echo"},
        {"type": "request", "id": True, "method": "echo"},
        {"type": "request", "id": -1, "method": "echo"},
        {"type": "request", "id": 1, "method": ""},
        {"type": "request", "id": 1, "method": "m" * 129},
        {"type": "hello", "version": 1, "min_version": 1, "id": "x" * 65, "name": "n",
         "address": "h:1", "incarnation": 0},
        {"type": "snapshot", "epoch": "e", "version": 0, "members": {}},
    ],
)  # fmt: skip
def test_bad_field_types_and_lengths(obj: dict) -> None:
    assert_refused_as_protocol_error(obj)


def test_compaction_path_keeps_every_message_in_order() -> None:
    # ~200 KB in all, fed in uneven chunks, so the consumed prefix passes 64 KiB
    # many times and the buffer is compacted while frames are still pending
    messages = [Request(i, "echo", {"i": i, "pad": "p" * (i % 97) * 10}) for i in range(600)]
    data = b"".join(encode_frame(m) for m in messages)
    assert len(data) > 3 * 65536
    decoder = FrameDecoder()
    out = []
    position, step = 0, 1
    while position < len(data):
        step = step * 7 % 5003 + 1
        decoder.feed(data[position : position + step])
        position += step
        out.extend(drain(decoder))
    assert out == messages
    assert decoder.buffered == 0


def test_compaction_with_everything_in_one_read() -> None:
    messages = [MemberJoined(i, Member(f"id{i}", f"n{i}", f"h{i}:9010", i)) for i in range(3000)]
    data = b"".join(encode_frame(m) for m in messages)
    assert len(data) > 65536 * 2
    decoder = FrameDecoder()
    decoder.feed(data)
    out = []
    for expected in messages:
        message = decoder.next_message()
        assert message == expected
        out.append(message)
    assert decoder.next_message() is None
    assert decoder.buffered == 0
    # and it keeps working after compaction
    decoder.feed(encode_frame(Snapshot("e", 1, ())))
    assert decoder.next_message() == Snapshot("e", 1, ())


def assert_refused_as_protocol_error(obj: object) -> None:
    """A frame of `obj` is a ProtocolError, and not the 'unknown type' kind a newer peer gets."""
    decoder = FrameDecoder()
    decoder.feed(raw_frame(obj))
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert not isinstance(info.value, UnknownMessageType)
