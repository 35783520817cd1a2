"""Watchers follow a storm: a blocking-query loop and an event stream, against a real distributor.

Fake members (FakeNode: the real wire protocol from the test) join and leave from a
few threads while a blocking-query loop (`/v1/members?index=&epoch=&wait=`) and a
server-sent-events client (a raw socket, reconnecting with Last-Event-ID twice in the
middle of the storm) follow it. At the end both hold exactly the distributor's final
member set and version, and the event stream never skipped or reordered a version.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import urllib.request
from typing import Any

from harness.ports import free_port
from harness.procs import Proc
from harness.waiting import DEADLINE, wait_for
from tests.integration.cluster import FakeNode

THREADS = 3
PER_THREAD = 50  # registrations per storm thread: 150 in all
RECONNECT_AT = (40, 120)  # events seen by the stream client when it drops and resumes


def get_members(port: int, query: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    url = f"http://127.0.0.1:{port}/v1/members{query}"
    with urllib.request.urlopen(url, timeout=DEADLINE) as resp:
        assert resp.status == 200
        return json.loads(resp.read()), dict(resp.headers)


class Follower(threading.Thread):
    """A thread whose first failure is kept for the test to raise."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.error: BaseException | None = None
        self.target: int | None = None  # the final version, once the storm is over
        self.version = -1
        self.members: dict[str, dict[str, Any]] = {}

    def run(self) -> None:
        try:
            self.follow()
        except BaseException as exc:
            self.error = exc

    def follow(self) -> None:
        raise NotImplementedError

    def finished(self) -> bool:
        if self.error is not None:
            raise AssertionError(f"{type(self).__name__} failed") from self.error
        return self.target is not None and self.version == self.target


class BlockingLoop(Follower):
    """GET /v1/members, then ?index=<last>&epoch=<last>&wait=1s over and over."""

    def __init__(self, http_port: int) -> None:
        super().__init__()
        self.http_port = http_port
        self.answers = 0
        self.woken = 0  # answers with a newer version than asked for
        # each blocking answer: (seconds it took, whether it brought a newer version)
        self.blocked: list[tuple[float, bool]] = []

    def follow(self) -> None:
        index, epoch = -1, ""
        while self.target is None or index < self.target:
            # the first answer at once, then each one once the version passes the last
            query = f"?index={index}&epoch={epoch}&wait=1s" if epoch else ""
            asked = time.monotonic()
            doc, headers = get_members(self.http_port, query)
            if query:
                self.blocked.append((time.monotonic() - asked, doc["version"] > index))
            assert headers["X-Mesh-Index"] == str(doc["version"]), headers
            assert headers["X-Mesh-Epoch"] == doc["epoch"]
            assert doc["version"] >= index, (doc["version"], index)  # same epoch: never back
            self.answers += 1
            self.woken += doc["version"] > index
            self.members = {m["id"]: m for m in doc["members"]}
            index, epoch = doc["version"], doc["epoch"]
            self.version = index


class EventClient(Follower):
    """GET /v1/events on a raw socket (HTTP/1.1, chunked), applying every event.

    Drops the connection after RECONNECT_AT events, waits for the distributor to move
    on, and resumes with Last-Event-ID: it must get exactly the events it missed.
    """

    def __init__(self, http_port: int, storm_done: threading.Event) -> None:
        super().__init__()
        self.http_port = http_port
        self.storm_done = storm_done
        self.epoch = ""
        self.last_id: str | None = None
        self.seen = 0  # events applied, snapshots included
        self.snapshots = 0
        self.behind_by = 0  # events the distributor was ahead when we reconnected
        # (version resumed from, events it was behind, first version after it)
        self.resumes: list[tuple[int, int, int]] = []
        self.resumed = threading.Event()  # set once it has resumed len(RECONNECT_AT) times
        self.problems: list[str] = []  # gaps, reorders, bad ids

    def follow(self) -> None:
        while not self.finished():
            self._connect_and_read()

    def _connect_and_read(self) -> None:
        resuming = self.last_id is not None
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=DEADLINE) as sock:
            extra = f"Last-Event-ID: {self.last_id}\r\n" if resuming else ""
            sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: mesh\r\n{extra}\r\n".encode())
            reader = ChunkedEvents(sock)
            head = reader.head()
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"text/event-stream" in head and b"chunked" in head.lower(), head
            from_version = self.version
            first = True
            sock.settimeout(0.5)  # to look at finished() while the stream is quiet
            while not self.finished():
                try:
                    events = reader.events()
                except TimeoutError:
                    continue
                for event in events:
                    if first and resuming:
                        self.resumes.append(
                            (from_version, self.behind_by, event["data"]["version"])
                        )
                        first = False
                    self._apply(event)
                    if self.seen in RECONNECT_AT:
                        self._wait_for_the_storm_to_move_on()
                        return

    def _apply(self, event: dict[str, Any]) -> None:
        kind, data = event["event"], event["data"]
        self.seen += 1
        self.last_id = event["id"]
        if kind == "snapshot":
            self.snapshots += 1
            self.epoch = data["epoch"]
            self.members = {m["id"]: m for m in data["members"]}
        else:
            if data["version"] != self.version + 1:
                self.problems.append(f"{kind} {data['version']} after {self.version}")
            if kind == "member_joined":
                self.members[data["member"]["id"]] = data["member"]
            elif kind == "member_left":
                assert data["reason"] == "closed", data
                self.members.pop(data["member"]["id"], None)
            else:
                self.problems.append(f"unknown event {kind!r}")
        if event["id"] != f"{self.epoch}:{data['version']}" or data["epoch"] != self.epoch:
            self.problems.append(f"event id {event['id']!r} for version {data['version']}")
        self.version = data["version"]

    def _wait_for_the_storm_to_move_on(self) -> None:
        """Disconnected: until the distributor is a few events further (so some are missed)."""
        if self.seen == RECONNECT_AT[-1]:
            self.resumed.set()  # the storm may finish now: our last drop is under way
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            self.behind_by = get_members(self.http_port)[0]["version"] - self.version
            if self.behind_by >= 3 or self.storm_done.is_set():
                return
            time.sleep(0.02)


class ChunkedEvents:
    """A raw HTTP/1.1 response: the head, then server-sent events out of its chunks."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = b""  # received, not yet de-chunked
        self.body = b""  # de-chunked, not yet cut into events

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the event stream closed")
        self.raw += data

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        return head

    def events(self) -> list[dict[str, Any]]:
        """The events received so far and not yet returned (comments skipped); reads
        from the socket only when there are none (the head may have brought some)."""
        while not (events := self._cut()):
            self._recv()
        return events

    def _cut(self) -> list[dict[str, Any]]:
        while (end := self.raw.find(b"\r\n")) >= 0:
            size = int(self.raw[:end], 16)
            if len(self.raw) < end + 2 + size + 2:
                break
            assert size > 0, "the server ended the stream"
            self.body += self.raw[end + 2 : end + 2 + size]
            self.raw = self.raw[end + 4 + size :]
        events = []
        while b"\n\n" in self.body:
            block, self.body = self.body.split(b"\n\n", 1)
            lines = block.decode().split("\n")
            if all(line.startswith(":") for line in lines):
                continue
            fields = dict(line.split(": ", 1) for line in lines)
            events.append({**fields, "data": json.loads(fields["data"])})
        return events


def storm(
    port: int,
    thread: int,
    opened: list[FakeNode],
    closed: list[int],
    gate: threading.Event,
    errors: list[BaseException],
) -> None:
    """PER_THREAD registrations, about two thirds of them closed again along the way."""
    try:
        _storm(port, thread, opened, closed, gate)
    except BaseException as exc:
        errors.append(exc)


def _storm(
    port: int, thread: int, opened: list[FakeNode], closed: list[int], gate: threading.Event
) -> None:
    rng = random.Random(thread)
    mine: list[FakeNode] = []
    for k in range(PER_THREAD):
        if k == 2 * PER_THREAD // 3:
            gate.wait(DEADLINE)  # the stream client resumes twice in the middle of the storm
        node = FakeNode(
            port,
            address=f"127.0.0.1:{free_port()}",
            name=f"storm-{thread}-{k}",
            member_id=f"zzzz-storm-{thread}-{k:03d}",
        ).__enter__()
        mine.append(node)
        opened.append(node)
        if rng.random() < 0.67 and mine:
            gone = mine.pop(rng.randrange(len(mine)))
            gone.__exit__(None, None, None)
            closed.append(1)
        time.sleep(0.005)  # a storm, not a single burst: the watchers follow it as it goes


def test_watchers_follow_a_storm_of_joins_and_leaves(make_cluster, record_figure) -> None:
    cluster = make_cluster(steady=True)
    distributor: Proc = cluster.distributor()
    port = distributor.http_port
    storm_done = threading.Event()
    blocking = BlockingLoop(port)
    events = EventClient(port, storm_done)
    blocking.start()
    events.start()
    wait_for("the watchers' first answers", lambda: blocking.answers and events.snapshots)

    opened: list[FakeNode] = []
    closed: list[int] = []
    errors: list[BaseException] = []
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=storm,
            args=(cluster.distributor_port, t, opened, closed, events.resumed, errors),
        )
        for t in range(THREADS)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE * 2)
            assert not thread.is_alive(), "a storm thread did not finish"
        assert not errors, errors
        storm_done.set()
        storm_seconds = time.monotonic() - started

        # every registration and every close is one event; nothing else happened. The
        # distributor notices the last closes on its own time: wait for them, then no more
        expected = THREADS * PER_THREAD + len(closed)
        final = wait_for(
            f"the distributor at version {expected}",
            lambda: (members := get_members(port)[0])["version"] >= expected and members,
        )
        final_ids = {m["id"] for m in final["members"]}
        assert final["version"] == expected
        assert len(final_ids) == THREADS * PER_THREAD - len(closed)
        blocking.target = events.target = final["version"]
        wait_for(
            "both watchers at the final version", lambda: blocking.finished() and events.finished()
        )
        blocking.join(DEADLINE)
        events.join(DEADLINE)

        assert set(blocking.members) == final_ids
        assert set(events.members) == final_ids
        assert events.members == {m["id"]: m for m in final["members"]}  # whole records too
        assert events.problems == [], events.problems[:5]
        assert events.snapshots == 1, "a resume within the history must not send a snapshot"
        assert len(events.resumes) == len(RECONNECT_AT), events.resumes
        for before, behind, first in events.resumes:
            assert behind >= 1, events.resumes  # it missed events while away
            assert first == before + 1, events.resumes  # and got them, from the next one
        # the loop followed the storm by being woken (at least once: it got from its first
        # answer to the final version), and a blocking query never answered early without
        # a change: one that brought the same version had waited its whole 1 s
        assert sum(woke for _, woke in blocking.blocked) >= 1
        assert blocking.version == final["version"]
        early_without_a_change = [t for t, woke in blocking.blocked if not woke and t < 0.95]
        assert early_without_a_change == [], blocking.blocked
    finally:
        for node in opened:
            node.__exit__(None, None, None)
    record_figure("watchers: storm of 150 joins and leaves", storm_seconds)
    record_figure("watchers: blocking-query answers during the storm", blocking.answers, "")
