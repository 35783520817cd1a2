"""The propagation yardstick: `python -m bench.broadcaster PORT`, a uvloop TCP server on
127.0.0.1 that forwards each join and leave to every other client, and does nothing else.

The same framing, wire types and raw clients (bench/rawclient.py) as the distributor:
a client's hello is its join, a leave frame or a closed socket its departure, and each
goes to every other client as a `deltas` frame of one event, encoded once. No registry,
no snapshot, no hello back, no heartbeats, no flush batching: the least a distributor
could do per event. bench/propagation.py measures the distributor against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sys
from collections.abc import Iterator
from typing import cast

import uvloop

from bench.procs import program
from harness.waiting import wait_for
from shared.framing import FrameDecoder, encode_frame
from shared.wire import (
    PROTOCOL_VERSION,
    Deltas,
    Hello,
    Leave,
    Member,
    MemberJoined,
    MemberLeft,
    ProtocolError,
)


class Broadcaster:
    """The joined clients, and the one thing done for them: forward each event to the rest."""

    def __init__(self) -> None:
        self.joined: set[ClientLink] = set()
        self._versions = itertools.count(1)

    def forward(self, sender: ClientLink, event: MemberJoined | MemberLeft) -> None:
        frame = encode_frame(Deltas(event.version, (event,)), version=PROTOCOL_VERSION)
        for client in self.joined:
            if client is not sender:
                client.send(frame)

    def join(self, client: ClientLink, member: Member) -> None:
        self.joined.add(client)
        self.forward(client, MemberJoined(next(self._versions), member))

    def leave(self, client: ClientLink, member: Member, reason: str) -> None:
        self.joined.discard(client)
        self.forward(client, MemberLeft(next(self._versions), member, reason))


class ClientLink(asyncio.Protocol):
    """One raw client: its hello joins it, its leave frame or its close makes it leave."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._broadcaster = broadcaster
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._member: Member | None = None  # from its hello; None again once it left

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance here
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._depart("closed")

    def send(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._decoder.feed(data)
        try:
            while (message := self._decoder.next_message()) is not None:
                if isinstance(message, Hello) and self._member is None:
                    self._member = message.member
                    self._broadcaster.join(self, message.member)
                elif isinstance(message, Leave):
                    self._depart("leave")
        except ProtocolError:
            self._transport.close()

    def _depart(self, reason: str) -> None:
        if self._member is not None:
            self._broadcaster.leave(self, self._member, reason)
            self._member = None


async def serve(port: int) -> None:
    broadcaster = Broadcaster()
    loop = asyncio.get_running_loop()
    # a backlog for a whole room dialling at once, as the distributor's MESH_MAX_CONNECTIONS
    server = await loop.create_server(
        lambda: ClientLink(broadcaster), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def serving(port: int) -> Iterator[None]:
    """The broadcaster in its own process (as the distributor runs in its own), listening."""
    with program("bench.broadcaster", [str(port)], {}):
        wait_for(
            "the broadcaster to listen",
            lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None,
        )
        yield


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
