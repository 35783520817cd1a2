"""A simulated node on a distributor link: the real hello, then it follows the member count.

Thousands of these run in one event loop, so the frame path is kept lean: frames
are cut by their length prefix and told apart by the start of their body (our
encoder writes "type" first). Member records are counted, not decoded: on a
2-CPU machine, decoding every record in the clients would swamp the figure of
the distributor they measure. With `watch`, deltas are decoded in full.

The clients speak version 3 (records as arrays, deltas in batches); the count
relies on what the bench's own records are: no `[` in a record but its own (no
services, no instances, none in a string), and no `{"id":` inside a string.
What proves the count is `digest`: SHA-256 over the record lists as they came (each
list's bytes and a comma), so with no departures it is the digest of the distributor's
own list, in its order (records_digest), when the client holds every member exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import orjson

from shared.framing import encode_frame
from shared.wire import Heartbeat, Hello, Leave, Member

HEARTBEAT = encode_frame(Heartbeat())
LEAVE = encode_frame(Leave())
_LENGTH = struct.Struct(">I")
_DELTAS = b'{"type":"deltas"'
_SNAPSHOT = b'{"type":"snapshot"'
_ERROR = b'{"type":"error"'
_HELLO = b'{"type":"hello"'
# one per record array (version 3), in a snapshot or a batch of deltas: a one-byte needle,
# which bytes.count scans three times as fast as two (issue 23: the storm's harness)
_RECORD = b"["
_OBJECT_RECORD = b'{"id":'  # one per record object (a version-2 distributor's snapshot)
_LEFT = b'{"left":'  # one per departure in a batch of deltas (its record is one more _RECORD)
_LAST = b'"last":true}'
_MEMBERS = b'"members":['  # a snapshot part's record list starts after this
_SNAPSHOT_TAIL = len(b'],"last":true}')  # what follows the list (false: one more byte)

# (kind, member id, reason, monotonic time): what a watcher hears
Watch = Callable[[str, str, str, float], None]


class Sampling:
    """Which clients of a worker also digest their list (issue 23: a storm's harness that
    hashed every record of every client cost more CPU than the distributor it measures).

    A client picked in advance always does; any other decides at its snapshot: it digests
    when that snapshot is the smallest this worker has seen (so the first client to join
    does: its snapshot is the smallest of all) or holds every member expected (so the last
    to join does: it gets them all in its snapshot). The rest count records and frames."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.smallest = expect + 1
        # the last whole snapshot digested here, and its digest: the many clients that join
        # with the same list (all N, at a storm's end) compare bytes instead of hashing them
        self.snapshot: tuple[bytes, Any] = (b"", None)

    def digest_of(self, records: memoryview) -> Any:
        """A fresh digest of one whole snapshot's record list (`_digest` of it)."""
        seen, digest = self.snapshot
        body = bytes(records)  # a copy, then a memcmp (a memoryview compares byte by byte)
        if digest is None or body != seen:  # equal bytes: the same digest, exactly
            digest = hashlib.sha256(body)
            digest.update(b",")
            self.snapshot = (body, digest)
        return digest.copy()

    def wants(self, count: int) -> bool:
        if count <= self.smallest:
            self.smallest = count
            return True
        return count >= self.expect


def hello_frame(index: int, prefix: str = "c") -> tuple[str, bytes]:
    """A fresh id and the hello frame a node with that id would send."""
    member_id = f"{prefix}{index:06d}-{secrets.token_hex(8)}"
    address = f"127.0.0.1:{10000 + index % 50000}"
    hello = Hello(
        id=member_id,
        name=f"{prefix}{index}",
        address=address,
        incarnation=1,
        nonce=secrets.token_hex(32),
    )
    return member_id, encode_frame(hello)


class RawClient(asyncio.Protocol):
    """Counts members from the snapshot (parts) and the deltas after it."""

    def __init__(
        self,
        index: int,
        expect: int,
        on_done: Callable[[RawClient], None] | None = None,
        watch: Watch | None = None,
        prefix: str = "c",
        sampling: Sampling | None = None,
    ) -> None:
        self.id, self._hello = hello_frame(index, prefix)
        self.expect = expect
        self.members = 0
        self.received = 0  # bytes, the distributor's hello and heartbeats included
        self.done_at: float | None = None
        self.error: str | None = None
        self.closed = False
        self.answered = asyncio.Event()  # the distributor's hello came back: it accepted us
        self.transport: asyncio.Transport | None = None
        self._on_done = on_done
        self._watch = watch
        self._buffer = bytearray()
        self._pending = 0  # records in snapshot parts before the last one
        self.digest = hashlib.sha256()  # of the record lists received (module docstring)
        self.frames = 0
        # None: every client digests; else decided at the first snapshot (Sampling)
        self._sampling = sampling
        self.checked: bool | None = True if sampling is None else None
        self.joined_with: int | None = None  # members in its first snapshot: its join's rank
        self._parts: Any = None  # the digest of a snapshot's parts so far (a hashlib hash)
        # our own handle on the socket, for Beats' thread (closed before the transport is)
        self._beat_socket: socket.socket | None = None
        self._beat_lock = threading.Lock()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance here
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._hello)  # written at once: a fresh socket's buffer is empty
        fileno = self.transport.get_extra_info("socket").fileno()
        beat_socket = socket.socket(fileno=os.dup(fileno))
        beat_socket.setblocking(False)
        with self._beat_lock:
            self._beat_socket = beat_socket

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop_beat_socket()
        self.closed = True
        self.answered.set()  # nobody waits for an answer that cannot come
        if self.done_at is None and self.error is None:
            self.error = f"closed by the distributor: {exc!r}" if exc else "closed"

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self._drop_beat_socket()  # else the socket would stay open after the transport's close
        if self.transport is not None:
            self.transport.close()

    def beat(self) -> None:
        """One heartbeat, from Beats' thread (we send nothing else after the hello)."""
        with self._beat_lock:
            if self._beat_socket is not None:
                try:
                    self._beat_socket.send(HEARTBEAT)
                except OSError:  # the link is going: connection_lost follows
                    pass

    def _drop_beat_socket(self) -> None:
        with self._beat_lock:
            if self._beat_socket is not None:
                self._beat_socket.close()
                self._beat_socket = None

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        # frames are read where they are: only the part of a frame still to come is copied
        frames: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            frames = self._buffer
        end = len(frames)
        pos = 0
        while end - pos >= 4:
            (length,) = _LENGTH.unpack_from(frames, pos)
            start = pos + 4
            if end - start < length:
                break
            pos = start + length
            self.frames += 1
            self._frame(frames, start, pos)
        if frames is self._buffer:
            del self._buffer[:pos]
        elif pos < end:
            self._buffer += memoryview(data)[pos:]
        if self.done_at is None and self.members == self.expect:
            self.done_at = time.monotonic()
            if self._on_done is not None:
                self._on_done(self)

    def _frame(self, frames: bytes | bytearray, start: int, stop: int) -> None:
        # one scan of a frame's bytes to count, one to digest: a storm is N^2 records
        if frames.startswith(_DELTAS, start):
            # each join adds one, each departure takes one away (and holds a record too);
            # departures are the only objects in a batch, found by a memchr, not a count;
            # the events' own list is one `[` more
            self.members += frames.count(_RECORD, start, stop) - 1
            if frames.find(b"{", start + 1, stop) != -1:
                self.members -= 2 * frames.count(_LEFT, start, stop)
            if self.checked:
                # the events: after the first `[` (the version before it is a number), to `]}`
                _digest(self.digest, frames, frames.index(b"[", start) + 1, stop - 2)
            if self._watch is not None:
                self._report(frames[start:stop])
        elif frames.startswith(_SNAPSHOT, start):
            # the naive mode sends a whole new list each time: the last part replaces the count
            records = frames.index(_MEMBERS, start) + len(_MEMBERS)
            form = _RECORD if frames[records] == ord("[") else _OBJECT_RECORD
            count = frames.count(form, records, stop)
            self._pending += count
            last = frames.endswith(_LAST, start, stop)
            if self.joined_with is None:
                self.joined_with = count if last else -1  # -1: a list in parts
            if self.checked is None:  # its first snapshot (of a list in parts: the first part)
                assert self._sampling is not None
                self.checked = self._sampling.wants(count if last else self._sampling.expect)
            if self.checked and last and self._parts is None and self._sampling is not None:
                with memoryview(frames) as view:  # a whole list in one frame
                    self._parts = self._sampling.digest_of(view[records : stop - _SNAPSHOT_TAIL])
            elif self.checked:
                if self._parts is None:
                    self._parts = hashlib.sha256()
                _digest(self._parts, frames, records, stop - _SNAPSHOT_TAIL - (not last))
            if last:
                self.members, self._pending = self._pending, 0
                if self.checked:
                    self.digest, self._parts = self._parts, None
        elif frames.startswith(_HELLO, start):
            self.answered.set()
        elif frames.startswith(_ERROR, start):
            self.error = orjson.loads(frames[start:stop]).get("message", "error frame")

    def _report(self, body: bytes | bytearray) -> None:
        assert self._watch is not None
        now = time.monotonic()
        for event in orjson.loads(body)["events"]:
            if isinstance(event, list):  # a joined member's record
                self._watch("joined", event[0], "", now)
            else:
                self._watch("left", event["left"][0], event["reason"], now)


def _digest(digest: Any, frames: bytes | bytearray, start: int, stop: int) -> None:
    """Add a record list (frames[start:stop], records joined by commas) and a comma."""
    with memoryview(frames) as view:
        digest.update(view[start:stop])
    digest.update(b",")


def records_digest(documents: Iterable[dict[str, Any]]) -> str:
    """What a client's digest is when it holds exactly these members, in this order: the
    distributor's /v1/members records, each encoded as the distributor sends it."""
    digest = hashlib.sha256()
    for document in documents:
        fields = {k: v for k, v in document.items() if k != "connected_since"}
        digest.update(orjson.dumps(Member.from_dict(fields).to_array()) + b",")
    return digest.hexdigest()


async def connect(
    loop: asyncio.AbstractEventLoop, client: RawClient, port: int, host: str = "127.0.0.1"
) -> None:
    """Dial; a failure is kept on the client as its error rather than raised."""
    try:
        await loop.create_connection(lambda: client, host, port)
    except OSError as exc:
        client.error = f"connect failed: {exc!r}"
        client.closed = True
        client.answered.set()


class Beats(threading.Thread):
    """A heartbeat to every client each interval, from a thread of its own.

    A worker runs thousands of clients in one loop, and in a storm one of its loop
    iterations can take longer than the heartbeat timeout (libuv reads every ready
    socket, again and again, before its timers run): beats from that loop would come
    late, and the distributor would rightly drop the links. A real node has a loop of
    its own. `clients` may grow while it runs.
    """

    def __init__(self, clients: list[RawClient], interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="beats")
        self._clients = clients
        self._interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            for client in list(self._clients):
                client.beat()

    def stop(self) -> None:
        self._stopped.set()
        self.join()
