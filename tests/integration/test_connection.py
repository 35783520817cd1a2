"""The connection edge in process, on loopback: the Listener when stopped, Link liveness."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Tls, Tuning
from shared.framing import encode_frame
from shared.link import Link, open_link
from shared.linkend import LinkDown
from shared.listener import Listener
from shared.looplag import LoopLag
from shared.tasks import cancel_and_wait
from shared.wire import Heartbeat, Hello
from tests.integration.test_tls import make_ca

TUNING = Tuning()


def hello(name: str) -> Hello:
    return Hello(id=name * 8, name=name, address="127.0.0.1:1")


async def test_stop_while_a_link_is_closing_is_quiet_and_drops_the_socket() -> None:
    """stop() can land while a served link flushes to a peer that does not read.

    Python 3.11's stream server prints a traceback for a handler task that ends
    cancelled; the listener must end its tasks normally and abort the socket.
    """
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    closing = asyncio.Event()

    async def serve(link: Link, _hello: Hello) -> None:
        # more than the socket buffers and the client's read limit hold, so close()
        # waits out its grace
        link.send_nowait(encode_frame(Heartbeat()) * (32 * 1024 * 1024 // 24))
        closing.set()

    listener = Listener(TUNING, LoopLag(), lambda: hello("b"), serve)
    port = await listener.start("127.0.0.1", 0)
    client = await open_link("127.0.0.1", port, TUNING, LoopLag())
    try:
        await client.handshake(hello("a"), dialer=True)
        async with asyncio.timeout(5):
            await closing.wait()
        await asyncio.sleep(0.05)  # now inside link.close()'s grace
        async with asyncio.timeout(5):
            await listener.stop()
        await asyncio.sleep(0.05)  # let the server's done-callbacks run
        assert reported == []
        # the server side was aborted, not left flushing: the client sees the end
        with pytest.raises(LinkDown) as ended:
            while True:
                await client.receive(loop.time() + 5)
        assert ended.value.end.reason == "closed"
    finally:
        client.abort()
        loop.set_exception_handler(None)


async def test_a_tls_handshake_under_way_at_stop_is_not_served(tmp_path: Path) -> None:
    """A connection is the listener's from its accept, TLS handshake included: stop()
    ends one still in it, so it never starts a link (on the distributor: a registration
    after the goodbye)."""
    tls = Tls.from_env(make_ca(tmp_path, "member")["member"])
    assert tls is not None
    tuning = dataclasses.replace(TUNING, tls=tls)
    served: list[Hello] = []

    async def serve(_link: Link, peer: Hello) -> None:
        served.append(peer)

    listener = Listener(tuning, LoopLag(), lambda: hello("b"), serve)
    port = await listener.start("127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setblocking(False)
        await asyncio.sleep(0.2)  # accepted: the listener's TLS waits for our ClientHello
        async with asyncio.timeout(5):
            await listener.stop()
        with pytest.raises((LinkDown, OSError)):  # the TLS handshake or ours fails
            async with asyncio.timeout(10):
                client = Link(tuning, LoopLag())
                await asyncio.get_running_loop().create_connection(
                    lambda: client, sock=sock, ssl=tls.client, server_hostname=""
                )
                try:
                    await client.handshake(hello("a"), dialer=True)
                finally:
                    client.abort()
    assert served == []


async def test_a_burst_of_dials_is_all_accepted_served_and_awaited_by_stop() -> None:
    """Every pending connection is accepted per readiness; stop() ends and awaits them all."""
    burst = 300
    served: set[str] = set()
    ended: list[str] = []
    all_served = asyncio.Event()

    async def serve(_link: Link, peer: Hello) -> None:
        served.add(peer.name)
        if len(served) == burst:
            all_served.set()
        try:
            await asyncio.Event().wait()  # served until stop() cancels it
        finally:
            await asyncio.sleep(0.01)  # a cleanup that itself awaits
            ended.append(peer.name)

    # the dials share this loop with the listener: the timeouts are not what is tested
    tuning = dataclasses.replace(TUNING, connect_timeout=30.0, handshake_timeout=30.0)
    listener = Listener(tuning, LoopLag(), lambda: hello("b"), serve)
    port = await listener.start("127.0.0.1", 0)

    async def dial(i: int) -> Link:
        link = await open_link("127.0.0.1", port, tuning, LoopLag())
        await link.handshake(hello(f"n{i}"), dialer=True)
        return link

    async with asyncio.timeout(60):
        clients = await asyncio.gather(*(dial(i) for i in range(burst)))
        await all_served.wait()
    try:
        async with asyncio.timeout(10):
            await listener.stop()
        assert sorted(ended) == sorted(served)
    finally:
        for client in clients:
            client.abort()


@contextlib.asynccontextmanager
async def link_to_a_peer(
    tuning: Tuning, *, reads: bool
) -> AsyncIterator[tuple[Link, bytearray, asyncio.StreamWriter]]:
    """A Link to a local peer with small socket buffers, what that peer has read
    (nothing, when it does not read), and the peer's writer."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    tasks: list[asyncio.Task[Any]] = []
    writers: list[asyncio.StreamWriter] = []

    async def read_all(reader: asyncio.StreamReader) -> None:
        while data := await reader.read(1 << 16):
            received.extend(data)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if reads:
            tasks.append(asyncio.create_task(read_all(reader)))

    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited when accepted
    listening.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(accept, sock=listening)
    dialing = socket.socket()
    dialing.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    dialing.setblocking(False)
    await loop.sock_connect(dialing, listening.getsockname())
    link = Link(tuning, LoopLag())
    await loop.create_connection(lambda: link, sock=dialing)
    try:
        async with asyncio.timeout(10):
            while not writers:  # noqa: ASYNC110 (accepted by the server's own task)
                await asyncio.sleep(0.01)
        yield link, received, writers[0]
    finally:
        link.abort()
        await cancel_and_wait(tasks)
        for peer_writer in writers:
            peer_writer.close()
        server.close()
        await server.wait_closed()


async def test_a_send_to_a_peer_that_does_not_read_waits_for_the_deadline_or_the_link_end() -> None:
    """Link.send waits only for a backlog: until the caller's deadline (TimeoutError, the
    link stays) or, without one, a heartbeat timeout (LinkDown)."""
    loop = asyncio.get_running_loop()
    tuning = dataclasses.replace(TUNING, heartbeat_timeout=1.0)
    async with link_to_a_peer(tuning, reads=False) as (link, _, _):
        await link.send(b"x" * 16)  # nothing waiting: taken at once
        await asyncio.sleep(0)  # a new loop iteration: the next frame is written, not queued
        with pytest.raises(TimeoutError):  # the deadline's end: not a LinkDown
            await link.send(b"x" * 1_000_000, deadline=loop.time() + 0.2)  # over the buffers
        assert not link.is_closing()
        with pytest.raises(LinkDown):
            async with asyncio.timeout(10):
                await link.send(b"x")


async def test_a_peer_that_does_not_read_is_cut_before_our_buffer_grows_past_the_limit() -> None:
    chunk = b"x" * 65536
    limit = 4 * TUNING.max_frame + 64 * 1024  # what Link allows to wait unread
    async with link_to_a_peer(TUNING, reads=False) as (link, _, _):
        largest = 0
        for _ in range(200):  # 13 MB, far over the limit
            link.send_nowait(chunk)
            await asyncio.sleep(0)
            if link.is_closing():
                break
            assert link.transport is not None
            largest = max(largest, link.transport.get_write_buffer_size())
        assert link.is_closing()
        assert largest <= limit + len(chunk)


async def test_a_burst_over_the_write_limit_to_a_peer_that_reads_is_not_cut() -> None:
    """Frames queued in one loop iteration go out in one write; a burst of them bigger
    than the limit is not a peer that does not read."""
    frame = b"x" * TUNING.max_frame
    async with link_to_a_peer(TUNING, reads=True) as (link, received, _):
        for _ in range(6):  # 6 MiB in one iteration, over the 4 MiB limit
            link.send_nowait(frame)
        async with asyncio.timeout(20):
            # polled: two conditions, one of them a transport's state with no event
            while len(received) < 6 * len(frame) and not link.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert not link.is_closing()
        assert len(received) == 6 * len(frame)


async def test_a_stall_that_ended_before_the_last_frame_does_not_delay_a_silent_peer() -> None:
    """A process thawed after a long freeze notices a peer that goes silent afterwards
    within the heartbeat timeout, not the timeout plus its own old freeze."""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)  # silent
    port = server.sockets[0].getsockname()[1]
    tuning = Tuning(heartbeat_interval=0.1, heartbeat_timeout=0.3)
    lag = LoopLag()
    link = await open_link("127.0.0.1", port, tuning, lag)
    now = loop.time()
    lag.tick(now - 1001.0)
    for step in range(11):  # a 1000 s freeze that ended a second ago, on time since
        lag.tick(now - 1.0 + step * 0.1)
    link.last_received = loop.time()  # a frame after the thaw
    sampler = asyncio.create_task(lag.run())
    try:
        async with asyncio.timeout(30):
            end = await link.serve(lambda _message: None)
        assert end.reason == "timeout"
    finally:
        sampler.cancel()
        link.abort()
        server.close()


async def test_a_dial_that_gets_no_answer_fails_at_the_connect_timeout() -> None:
    """A dead container's address answers nothing: the dial gives up at
    MESH_CONNECT_TIMEOUT, not at the (here far longer) handshake timeout."""
    # a listener that never accepts, its one-slot backlog already taken: the kernel
    # drops further SYNs, so a connect hangs as it does to an address nobody holds
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    held: list[socket.socket] = []
    try:
        port = silent.getsockname()[1]
        for _ in range(4):  # fill the backlog (its size is listen()'s argument, rounded)
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            held.append(sock)
        await asyncio.sleep(0.2)
        tuning = dataclasses.replace(TUNING, connect_timeout=0.5, handshake_timeout=120.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LinkDown) as caught:
            async with asyncio.timeout(60):  # a generous bound, far under the handshake timeout
                await open_link("127.0.0.1", port, tuning, LoopLag())
        assert caught.value.end.detail == "timed out"
        print(f"dial gave up after {loop.time() - started:.2f} s (connect timeout 0.5 s)")
    finally:
        for sock in held:
            sock.close()
        silent.close()


async def backed_up(link: Link) -> None:
    """Queue more than the socket buffers hold (under the write limit, so not cut)."""
    beat = encode_frame(Heartbeat())
    link.send_nowait(beat * (2 * 1024 * 1024 // len(beat)))
    await asyncio.sleep(0.1)
    assert link.transport is not None and link.transport.get_write_buffer_size() > 0


# A peer's EOF ends a Link at once, as closed, even with writes to it backed up: a
# transport that still holds unsent bytes calls connection_lost() only once they are
# flushed, which a peer that no longer reads never lets happen. Short, so that a wrong
# end (a timeout) comes quickly.
EOF_TUNING = dataclasses.replace(TUNING, heartbeat_timeout=2.0)


async def test_an_eof_ends_a_serving_link_as_closed_even_with_writes_backed_up() -> None:
    async with link_to_a_peer(EOF_TUNING, reads=False) as (link, _, peer):
        await backed_up(link)
        peer.write_eof()  # the peer is done: EOF
        async with asyncio.timeout(10):
            end = await link.serve(lambda _message: None)
        # not a timeout after heartbeat_timeout
        assert (end.reason, end.detail) == ("closed", "connection closed by peer")


async def test_an_eof_ends_a_receive_before_serve_as_closed_even_with_writes_backed_up() -> None:
    loop = asyncio.get_running_loop()
    async with link_to_a_peer(EOF_TUNING, reads=False) as (link, _, peer):
        await backed_up(link)
        peer.write_eof()
        with pytest.raises(LinkDown) as ended:
            await link.receive(loop.time() + 2.0)
        # not a timeout at the deadline, as if the peer had gone silent
        assert ended.value.end.reason == "closed"


async def test_the_listener_listens_on_every_address_its_host_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host name of two addresses (localhost: 127.0.0.1 and ::1, say) is reachable on
    both, on one port: a dialler may try either."""
    loop = asyncio.get_running_loop()
    resolve = loop.getaddrinfo

    async def two_addresses(host: Any, port: Any, **kwargs: Any) -> Any:
        if host != "two.test":
            return await resolve(host, port, **kwargs)
        first = await resolve("127.0.0.1", port, **kwargs)
        second = await resolve("127.0.0.2", port, **kwargs)  # loopback too, on Linux
        return first + second + first  # a name listed twice is bound once

    monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
    served: list[str] = []

    async def serve(_link: Link, peer: Hello) -> None:
        served.append(peer.name)

    listener = Listener(TUNING, LoopLag(), lambda: hello("b"), serve)
    port = await listener.start("two.test", 0)
    try:
        for address in ("127.0.0.1", "127.0.0.2"):
            client = await open_link(address, port, TUNING, LoopLag())
            try:
                async with asyncio.timeout(5):
                    await client.handshake(hello(address[-1]), dialer=True)
            finally:
                client.abort()
        async with asyncio.timeout(5):
            while len(served) < 2:  # noqa: ASYNC110 (served is a plain list)
                await asyncio.sleep(0.01)
        assert sorted(served) == ["1", "2"]
    finally:
        await listener.stop()
