"""Sans-I/O framing: bytes in, messages out; messages in, bytes out. No sockets here.

A frame is a 4-byte big-endian length followed by that many bytes of one JSON
object (see wire.py). Like h11's receive buffer, the decoder only ever hands
out whole frames: partial frames wait for more data, and several frames in one
read come out one by one, and so do the deltas of one `deltas` frame (version 3): a
reader sees the same messages whatever version its link speaks.
"""

from __future__ import annotations

import collections
import struct

from shared.wire import (
    MIN_PROTOCOL_VERSION,
    Deltas,
    FrameTooLarge,
    Heartbeat,
    Message,
    decode,
    encode,
)

DEFAULT_MAX_FRAME = 1024 * 1024
_LENGTH = struct.Struct(">I")
# an idle link is mostly these: one every heartbeat interval each way, each link
_PLAIN_HEARTBEAT = Heartbeat()
_PLAIN_HEARTBEAT_BODY = encode(_PLAIN_HEARTBEAT)


def frame(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix an encoded body with its length; refuse to build an oversize frame."""
    if len(body) > max_frame:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over the cap of {max_frame}")
    return _LENGTH.pack(len(body)) + body


def encode_frame(
    message: Message, max_frame: int = DEFAULT_MAX_FRAME, version: int = MIN_PROTOCOL_VERSION
) -> bytes:
    """One frame for a peer speaking `version` (by default, in the form every version reads)."""
    return frame(encode(message, version), max_frame)


class FrameDecoder:
    """Feed it bytes as they arrive; take whole messages out with next_message().

    A ProtocolError from next_message() means the stream is unusable: the caller
    closes that connection. The decoder refuses an oversize frame as soon as its
    length prefix arrives, before buffering the body.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._start = 0  # consumed prefix, compacted lazily to avoid quadratic copies
        self._deltas: collections.deque[Message] = collections.deque()  # of one `deltas` frame

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes arrive."""
        if self._deltas:
            return self._deltas.popleft()
        if self.buffered < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, self._start)
        if length > self.max_frame:
            raise FrameTooLarge(f"frame of {length} bytes is over the cap of {self.max_frame}")
        body_start = self._start + _LENGTH.size
        if len(self._buffer) - body_start < length:
            return None
        body = bytes(self._buffer[body_start : body_start + length])
        self._start = body_start + length
        if self._start > 65536 and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
        if body == _PLAIN_HEARTBEAT_BODY:  # as decode() would read it, without parsing
            return _PLAIN_HEARTBEAT
        message = decode(body)
        if isinstance(message, Deltas):
            self._deltas.extend(message.events)
            return self._deltas.popleft()  # never empty (wire.py refuses an empty batch)
        return message
