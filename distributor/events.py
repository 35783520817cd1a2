"""GET /v1/events: the registry's changes as server-sent events (text/event-stream).

    event: snapshot          id: <epoch>:<version>   data: the /v1/members body
    event: member_joined     id: <epoch>:<version>   data: {"epoch", "version", "member"}
    event: member_left       id: <epoch>:<version>   data: {"epoch", "version", "member", "reason"}
    : keepalive              (a comment, after KEEPALIVE seconds with nothing else sent)

A stream starts with a snapshot, then sends every event in version order: it keeps the
last version it sent and, at each wake, sends `registry.events_after(last)`. One that
fell out of the registry's history (over 1,024 events behind: a slow reader) gets a new
snapshot and goes on from there, so nothing is ever skipped or reordered. A member_joined
of a known id is an update: the client replaces the record.

A client that reconnects with `Last-Event-ID: <epoch>:<version>` of this run, still in
the history, gets only what it missed (nothing at all if it missed nothing); any other
Last-Event-ID (another epoch, too old, malformed) gets a snapshot.

Each event is encoded once, whatever the number of streams (those still in the
registry's history are kept, by version; the snapshot once per version). A write waits
for the client to take the data, and a backlog goes in pieces of STREAM_PIECE bytes: a
client that stops reading costs a bounded buffer, never its whole backlog nor an
ever-growing queue, and one whose write has waited WRITE_TIMEOUT seconds is cut. Streams
and parked blocking queries together are capped at MESH_MAX_WATCHERS
(distributor/watch.py): beyond, 429 at once. A client that is gone ends its stream
quietly, at the next change or keepalive; on shutdown every stream ends.
"""

from __future__ import annotations

import asyncio
import re

import orjson
from aiohttp import web

from distributor.registry import HISTORY, Event
from distributor.watch import Watchers
from shared.wire import MemberLeft

KEEPALIVE_LINE = b": keepalive\n\n"
WRITE_TIMEOUT = 30.0  # seconds a stream waits for a client to read before it cuts it
_SMALL = 16384  # bytes: a write this small into an empty transport buffer never waits
# bytes a stream writes at once: what a slow reader holds in this process is bounded (about
# this, aiohttp's 64 KiB between waits and the transport's 64 KiB high-water mark), never its
# whole backlog
STREAM_PIECE = 65536
STREAM_BUFFER = 4 * STREAM_PIECE  # the bound the tests hold a slow reader's buffer to
_VERSION = re.compile(r"[0-9]{1,19}")


def sse(kind: str, event_id: str, data: bytes) -> bytes:
    """One event; `data` is one line of JSON (orjson never writes a newline)."""
    return b"event: %s\nid: %s\ndata: %s\n\n" % (kind.encode(), event_id.encode(), data)


class EventFeed:
    def __init__(self, watchers: Watchers) -> None:
        self._watchers = watchers
        self._events: dict[int, bytes] = {}  # version -> encoded event, oldest first
        self._snapshot: tuple[int, bytes] = (-1, b"")

    def snapshot(self) -> tuple[bytes, int]:
        """The snapshot event of the registry now, and its version."""
        registry = self._watchers.registry
        version = registry.version
        if self._snapshot[0] != version:
            event_id = f"{registry.epoch}:{version}"
            self._snapshot = (version, sse("snapshot", event_id, self._watchers.members_body()))
        return self._snapshot[1], version

    def event(self, event: Event) -> bytes:
        """One member_joined / member_left event, encoded once for every stream."""
        encoded = self._events.get(event.version)
        if encoded is None:
            epoch = self._watchers.registry.epoch
            data = {"epoch": epoch, "version": event.version, "member": event.entry.document()}
            if isinstance(event.delta, MemberLeft):
                data["reason"] = event.delta.reason
            encoded = sse(event.delta.TYPE, f"{epoch}:{event.version}", orjson.dumps(data))
            self._events[event.version] = encoded
            if len(self._events) > HISTORY:
                self._forget_unservable()
        return encoded

    def _forget_unservable(self) -> None:
        """Drop the encodings of events out of the registry's history: no stream can be
        sent those any more (events_after gives only what the history holds). By version,
        not by age in the cache: a resumed stream caches old events after newer ones."""
        history = self._watchers.registry.history
        oldest = history[0].version if history else self._watchers.registry.version + 1
        self._events = {v: encoded for v, encoded in self._events.items() if v >= oldest}

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The version to go on from, for a Last-Event-ID of this run still in the
        history; None when the client needs a snapshot."""
        if not last_event_id:
            return None
        registry = self._watchers.registry
        epoch, _, version = last_event_id.strip().rpartition(":")
        if epoch != registry.epoch or not _VERSION.fullmatch(version):
            return None
        after = int(version)
        return after if registry.events_after(after) is not None else None

    async def stream(self, request: web.Request) -> web.StreamResponse:
        watchers = self._watchers
        registry = watchers.registry
        sent = self.resume_point(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
                "X-Mesh-Epoch": registry.epoch,
            }
        )
        watchers.admit()  # over MESH_MAX_WATCHERS: 429 (distributor/http.py), no stream
        loop = asyncio.get_running_loop()
        watchers.streams += 1
        try:
            await response.prepare(request)
            quiet_until = loop.time() + watchers.keepalive
            # the client gone (aiohttp drops the transport) or the server stopping: done
            while not watchers.closing and request.transport is not None:
                events = None if sent is None else registry.events_after(sent)
                if events is None:  # a new stream, or one too far behind to catch up
                    data, sent = self.snapshot()
                elif events:
                    data = b"".join(map(self.event, events))
                    sent = events[-1].version
                else:
                    remaining = quiet_until - loop.time()
                    if remaining > 0:
                        await watchers.watch.wait(remaining)
                        continue
                    data = KEEPALIVE_LINE
                await self._write(request, response, data)
                quiet_until = loop.time() + watchers.keepalive
        except OSError:  # ConnectionResetError and the like, or TimeoutError: a stuck reader
            if request.transport is not None:
                request.transport.abort()
        finally:
            watchers.streams -= 1
        return response

    async def _write(self, request: web.Request, response: web.StreamResponse, data: bytes) -> None:
        """Write, waiting while the client's buffers are full, at most write_timeout.

        A backlog (up to HISTORY events, or a snapshot of every member) goes in pieces of
        at most STREAM_PIECE bytes, each waiting for the client to take the last: a slow
        reader holds a bounded buffer here, never the whole backlog, then is cut."""
        transport = request.transport
        if transport is not None and not transport.get_write_buffer_size() and len(data) < _SMALL:
            # all sent so far, and this fits under the transport's high-water mark: the
            # write cannot wait, so no timer (one change wakes every stream)
            await response.write(data)
            return
        view = memoryview(data)
        async with asyncio.timeout(self._watchers.write_timeout):
            for start in range(0, len(view), STREAM_PIECE):
                # aiohttp's write waits for the transport to drain once 64 KiB went
                # through it: the backlog is never in the buffers all at once
                await response.write(view[start : start + STREAM_PIECE])
