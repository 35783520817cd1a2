"""Clusters of real distributor and node processes on loopback, and the ways tests poke at
them (the processes themselves, ports, waiting and sampling are in harness/)."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.ports import free_port
from harness.procs import Proc, clean_env
from shared.framing import FrameDecoder, encode_frame
from shared.wire import Heartbeat, Hello, Message, Snapshot

# short timings for tests that expect a drop (DESIGN.md, "Timing")
FAST = {"MESH_HEARTBEAT_INTERVAL": "0.3", "MESH_HEARTBEAT_TIMEOUT": "1.2", "MESH_RETRY_MAX": "1"}
# a test that expects nothing to be dropped runs with a timeout of 3 s or more
STEADY = {**FAST, "MESH_HEARTBEAT_TIMEOUT": "3"}


@dataclass
class Cluster:
    tmp: Path
    env: dict[str, str]
    distributor_port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)

    def _proc(
        self,
        name: str,
        program: list[str],
        flags: list[str],
        port: int,
        http_port: int,
        env: dict[str, str] | None,
    ) -> Proc:
        proc = Proc(
            name=name,
            args=[sys.executable, *program, *flags],
            env=clean_env({**self.env, **(env or {})}),
            log_path=self.tmp / f"{name}.log",
            http_port=http_port,
            port=port,
        )
        self.procs.append(proc)
        return proc

    def distributor(
        self,
        env: dict[str, str] | None = None,
        port: int | None = None,
        name: str = "distributor",
        program: tuple[str, ...] = ("-m", "distributor"),
        http_port: int | None = None,
    ) -> Proc:
        """Start a distributor on the cluster's fixed port (restarts reuse it), or on `port`;
        `http_port` keeps its HTTP API where it was (a browser's page, say)."""
        port, http_port = port or self.distributor_port, http_port or free_port()
        flags = ["--host", "127.0.0.1", "--port", str(port), "--http-port", str(http_port)]
        proc = self._proc(name, list(program), flags, port, http_port, env).start()
        proc.wait_healthy()
        return proc

    def node(
        self,
        name: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        program: tuple[str, ...] = ("-m", "node"),
        distributor: bool = True,
        port: int | None = None,
        extra: list[str] | None = None,
    ) -> Proc:
        """Start a node; `extra` flags go after the usual ones (--service goods, say)."""
        port, http_port = port or free_port(), free_port()
        flags = [
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(http_port),
        ]
        if distributor:
            flags += ["--distributor", f"127.0.0.1:{self.distributor_port}"]
        flags += extra or []
        proc = self._proc(name, list(program), flags, port, http_port, env).start()
        if wait:
            proc.wait_healthy()
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()


def status(node: Proc) -> dict[str, Any]:
    return node.get("/v1/status")


def connected_peer_ids(node: Proc) -> set[str]:
    return {p["id"] for p in status(node)["peers"] if p["state"] == "connected"}


def full_mesh(nodes: list[Proc]) -> dict[str, str] | None:
    """name -> id when every node has every other as a connected peer, else None."""
    ids = {n.name: status(n)["id"] for n in nodes}
    for n in nodes:
        if connected_peer_ids(n) != {ids[o.name] for o in nodes if o is not n}:
            return None
    return ids


def peer_links(node: Proc) -> dict[str, str]:
    """peer id -> when its link came up, for connected peers: a reconnect changes it."""
    return {p["id"]: p["since"] for p in status(node)["peers"] if p["state"] == "connected"}


def member_ids(node: Proc) -> set[str]:
    st = status(node)
    return {m["id"] for m in st["members"]} | {p["id"] for p in st["peers"]}


def registered_ids(distributor: Proc) -> set[str]:
    return {m["id"] for m in distributor.get("/v1/members")["members"]}


class FakeNode:
    """A hand-driven registration: speaks the wire protocol from the test itself.

    Its id sorts after every uuid hex id, so real nodes are the ones that dial it.
    """

    def __init__(
        self,
        distributor_port: int,
        address: str,
        name: str = "ghost",
        member_id: str = "zzzz-ghost",
        incarnation: int = 1,
    ) -> None:
        self.id = member_id
        self.sock = socket.create_connection(("127.0.0.1", distributor_port), timeout=10)
        self.decoder = FrameDecoder()
        self.send(Hello(id=member_id, name=name, address=address, incarnation=incarnation))
        self._stop = threading.Event()
        self._beats = threading.Thread(target=self._heartbeat, daemon=True)

    def send(self, message: Message) -> None:
        self.sock.sendall(encode_frame(message))

    def receive(self) -> Message:
        return first_message(self.sock, self.decoder)

    def _heartbeat(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.send(Heartbeat())
            except OSError:
                return

    def __enter__(self) -> FakeNode:
        assert isinstance(self.receive(), Hello)
        assert isinstance(self.receive(), Snapshot)
        self._beats.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        if self._beats.is_alive():
            self._beats.join()


def first_message(sock: socket.socket, decoder: FrameDecoder | None = None) -> Message:
    """The next whole message on a blocking socket."""
    decoder = decoder or FrameDecoder()
    while (message := decoder.next_message()) is None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a whole frame arrived")
        decoder.feed(data)
    return message


class GhostPeer:
    """A member that real nodes may or may not reach: a partial partition on loopback.

    It registers with the distributor (so the registry sees it alive) at an address of its
    own; only while `reachable()` is on does it answer there, with its hello and heartbeats.
    Its id sorts after every uuid hex id, so real nodes dial it. Use as a context manager.
    """

    def __init__(
        self,
        distributor_port: int,
        name: str = "ghost",
        port: int | None = None,
        incarnation: int = 1,
    ) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.hello = Hello(f"zzzz-{name}", name, self.address, incarnation)
        self.id = self.hello.id
        self._registration = FakeNode(
            distributor_port, self.address, name=name, member_id=self.id, incarnation=incarnation
        )
        self._server: socket.socket | None = None
        self._links: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> GhostPeer:
        self._registration.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._registration.__exit__()

    def reachable(self) -> None:
        """Answer dials from now on: the partition heals."""
        self._stop.clear()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._spawn(self._accept, self._server)

    def cut(self) -> None:
        """Close every link and stop answering: the partition is back."""
        self._stop.set()
        for sock in [self._server, *self._links]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self._server, self._links = None, []
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = server.accept()
            except OSError:
                return
            self._links.append(sock)
            self._spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        """Hello for hello, then heartbeats out and everything in read and dropped."""
        with contextlib.suppress(OSError, ConnectionError):
            first_message(sock)  # the dialler's hello
            sock.sendall(encode_frame(self.hello))
            sock.settimeout(0.2)
            while not self._stop.is_set():
                sock.sendall(encode_frame(Heartbeat()))
                with contextlib.suppress(TimeoutError):
                    if not sock.recv(65536):
                        return
