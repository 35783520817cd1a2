"""A peer's EOF ends a Link at once, as closed, even with writes to it backed up.

A transport that still holds unsent bytes calls connection_lost() only once they are
flushed, which a peer that no longer reads never lets happen: without eof_received()
ending it, the link lived on until the silence watchdog (or the deadline) ended it, as
a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator

import pytest

from shared.config import Tuning
from shared.framing import encode_frame
from shared.link import Link
from shared.linkend import LinkDown
from shared.looplag import LoopLag
from shared.wire import Heartbeat

# short, so a wrong end (a timeout) comes quickly
TUNING = dataclasses.replace(Tuning(), heartbeat_timeout=2.0)


@contextlib.asynccontextmanager
async def link_to_a_peer_that_stops_reading() -> AsyncIterator[tuple[Link, socket.socket]]:
    """A Link dialled to a raw peer socket that reads nothing, with small socket buffers."""
    loop = asyncio.get_running_loop()
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited when accepted
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    dialing = socket.socket()
    dialing.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    dialing.setblocking(False)
    await loop.sock_connect(dialing, listening.getsockname())
    peer, _ = listening.accept()
    link = Link(TUNING, LoopLag())
    await loop.create_connection(lambda: link, sock=dialing)
    try:
        yield link, peer
    finally:
        link.abort()
        peer.close()
        listening.close()


async def backed_up(link: Link) -> None:
    """Queue more than the socket buffers hold (under the write limit, so not cut)."""
    beat = encode_frame(Heartbeat())
    link.send_nowait(beat * (2 * 1024 * 1024 // len(beat)))
    await asyncio.sleep(0.1)
    assert link.transport is not None and link.transport.get_write_buffer_size() > 0


async def test_an_eof_ends_a_serving_link_as_closed_even_with_writes_backed_up() -> None:
    async with link_to_a_peer_that_stops_reading() as (link, peer):
        await backed_up(link)
        peer.shutdown(socket.SHUT_WR)  # the peer is done: EOF
        async with asyncio.timeout(10):
            end = await link.serve(lambda _message: None)
        # not a timeout after heartbeat_timeout
        assert (end.reason, end.detail) == ("closed", "connection closed by peer")


async def test_an_eof_ends_a_receive_before_serve_as_closed_even_with_writes_backed_up() -> None:
    loop = asyncio.get_running_loop()
    async with link_to_a_peer_that_stops_reading() as (link, peer):
        await backed_up(link)
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(LinkDown) as ended:
            await link.receive(loop.time() + 2.0)
        # not a timeout at the deadline, as if the peer had gone silent
        assert ended.value.end.reason == "closed"
