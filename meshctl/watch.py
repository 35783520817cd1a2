"""meshctl watch: follow a distributor's /v1/events, a live table redrawn in place.

The state (WatchState) is pure: events in, members out. The loop around it is the I/O
edge: it opens the stream, feeds the state, and when the stream ends (the distributor
stopped, restarted, or went silent for READ_TIMEOUT) it reconnects with backoff, sending
Last-Event-ID so a distributor of the same run sends only what was missed; one of a new
run (a new epoch) sends a snapshot, which replaces the table.

Three ways to show it:
- a terminal: a rich.live view (header, member table, the last changes), redrawn in
  place; a red banner while disconnected, with the retry countdown.
- --json: each event's data, one JSON object a line, as the API sends it (the snapshot
  has "members", a leave has "reason"); connection changes as lines on stderr.
- not a terminal, no --json: one plain line per change.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from meshctl.client import Client, ErrorAnswer, Event, Unreachable, network_reason, read_events
from meshctl.render import members_table, plural, short
from shared.backoff import Backoff

READ_TIMEOUT = 45.0  # s: three of the server's 15 s keepalives missed: the stream is dead
RETRY_BASE = 0.25  # s: the first reconnect waits up to this
RETRY_MAX = 5.0  # s: and never more than this
RECENT = 8  # changes listed under the table


@dataclass
class WatchState:
    """The member table as the events build it. Pure: `apply` returns lines that say
    what changed (empty for an event that changed nothing)."""

    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    epoch: str | None = None
    version: int | None = None
    last_id: str | None = None  # the last event id seen: Last-Event-ID on reconnect

    def apply(self, event: Event) -> list[str]:
        """One event; ValueError when its data is not what the API sends."""
        try:
            data = json.loads(event.data)
        except ValueError:
            raise ValueError(f"an event whose data is not JSON: {event.data[:80]!r}") from None
        if not isinstance(data, dict):
            raise ValueError("an event whose data is not a JSON object")
        changes: list[str] = []
        epoch = data.get("epoch")
        if event.kind == "snapshot":
            members = data.get("members")
            if not isinstance(members, list) or not all(
                isinstance(m, dict) and "id" in m for m in members
            ):
                raise ValueError("a snapshot without a list of members")
            if self.epoch is not None and epoch != self.epoch:
                changes.append(f"new epoch {epoch} (was {self.epoch}): the distributor restarted")
            self.members = {m["id"]: m for m in members}
            version = data.get("version")
            count = plural(len(members), "member")
            changes.append(f"snapshot: {count}, epoch {epoch}, version {version}")
        elif event.kind in ("member_joined", "member_left"):
            member = data.get("member")
            if not isinstance(member, dict) or "id" not in member:
                raise ValueError(f"a {event.kind} event without a member")
            name = _who(member)
            if event.kind == "member_left":
                if self.members.pop(member["id"], None) is not None:
                    changes.append(f"- {name} left ({data.get('reason', '?')})")
            elif member["id"] in self.members:
                self.members[member["id"]] = member
                changes.append(f"~ {name} updated{_flags(member)}")
            else:
                self.members[member["id"]] = member
                changes.append(f"+ {name} joined{_flags(member)}")
        else:
            return []  # an event type of a newer distributor: nothing we know to do
        self.epoch = epoch if isinstance(epoch, str) else self.epoch
        if isinstance(data.get("version"), int):
            self.version = data["version"]
        if event.id:
            self.last_id = event.id
        return changes


def _who(member: Mapping[str, Any]) -> str:
    return f"{member.get('name')} ({short(member.get('id'))})"


def _flags(member: Mapping[str, Any]) -> str:
    parts = []
    if member.get("services"):
        parts.append("services " + ",".join(map(str, member["services"])))
    if member.get("draining"):
        parts.append("draining")
    return f": {'; '.join(parts)}" if parts else ""


class WatchView:
    """What the live display draws, made at each refresh (so ages and the countdown move).

    The loop changes it from the main thread; rich's refresh thread reads it: one lock.
    """

    def __init__(self, url: str, state: WatchState) -> None:
        self.url = url
        self.state = state
        self.lock = threading.Lock()
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.problem: str | None = None  # why we are disconnected; None when connected
        self.retry_at: float | None = None  # monotonic time of the next attempt
        self.attempts = 0

    def note(self, lines: list[str]) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self.lock:
            self.recent.extend(f"{stamp} {line}" for line in lines)

    def __rich__(self) -> RenderableType:
        with self.lock:
            state = self.state
            if self.problem is None:
                header = Text.assemble(
                    ("● connected ", "bold green"),
                    f"{self.url} · epoch {state.epoch} · version {state.version}"
                    f" · {plural(len(state.members), 'member')}",
                )
            else:
                wait = max(0.0, (self.retry_at or 0) - time.monotonic())
                header = Text.assemble(
                    (" DISCONNECTED ", "bold white on red"),
                    (
                        f" {self.url} · {self.problem} · retry in {wait:.1f} s"
                        f" (attempt {self.attempts}) · table as last seen",
                        "red",
                    ),
                )
            table = members_table(list(state.members.values()), time.time())
            recent = Text("\n".join(self.recent), style="dim")
        return Group(header, table, recent)


def watch(client: Client, json_mode: bool, out: Console) -> int:
    """Follow the stream until Ctrl-C (then 0). The first connection failing is exit 3,
    as for any command; after that, a lost stream is retried for ever, with backoff."""
    state = WatchState()
    view = WatchView(client.base, state)
    live_mode = out.is_terminal and not json_mode
    live = Live(view, console=out, refresh_per_second=2) if live_mode else None

    def show(event: Event, changes: list[str]) -> None:
        if json_mode:
            sys.stdout.write(event.data + "\n")
            sys.stdout.flush()
        elif live is not None:
            view.note(changes)
            live.refresh()
        else:
            if event.kind == "snapshot":  # and who is in it, one line each
                changes += [f"  {_who(m)}{_flags(m)}" for m in state.members.values()]
            for line in changes:
                out.print(line, markup=False, highlight=False, soft_wrap=True)

    def status(line: str) -> None:
        if live is None:  # json or plain: a line on stderr
            sys.stderr.write(f"meshctl: watch: {line}\n")
            sys.stderr.flush()
        else:
            view.note([line])

    # SIGTERM (`kill`) stops it as Ctrl-C does: the live view restores the cursor, exit 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # the first connection before anything is drawn: failing, it is one line and exit 3
        first = client.stream("/v1/events", {}, READ_TIMEOUT)
        with live if live is not None else contextlib.nullcontext():
            _follow(client, first, state, view, show, status)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _follow(
    client: Client,
    first: http.client.HTTPResponse,
    state: WatchState,
    view: WatchView,
    show: Callable[[Event, list[str]], None],
    status: Callable[[str], None],
) -> None:
    """Read the stream `first`, then reconnect for ever, with backoff (reset once a new
    stream has delivered an event: one that ends at once is retried ever more slowly)."""
    backoff = Backoff(RETRY_BASE, RETRY_MAX)
    response: http.client.HTTPResponse | None = first
    while True:
        if response is None:
            headers = {"Last-Event-ID": state.last_id} if state.last_id else {}
            try:
                response = client.stream("/v1/events", headers, READ_TIMEOUT)
            except Unreachable as exc:
                problem = exc.reason
            else:
                with view.lock:
                    view.problem, view.attempts = None, 0
                status(f"reconnected to {client.base}")
        if response is not None:
            problem, delivered = _drain(response, state, show)
            response = None
            if delivered:
                backoff.reset()
        delay = backoff.next_delay()
        with view.lock:
            announce = view.problem is None
            view.problem = problem
            view.attempts = backoff.attempt
            view.retry_at = time.monotonic() + delay
        if announce:
            status(f"disconnected: {problem}")
        time.sleep(delay)


def _drain(
    response: http.client.HTTPResponse,
    state: WatchState,
    show: Callable[[Event, list[str]], None],
) -> tuple[str, bool]:
    """Read events until the stream ends: why it ended, and whether any event came."""
    delivered = False
    try:
        for event in read_events(iter(response.readline, b"")):
            try:
                changes = state.apply(event)
            except ValueError as exc:
                raise ErrorAnswer(f"{response.geturl()}: {exc}: not a mesh event stream") from None
            delivered = True
            show(event, changes)
        return "the stream ended", delivered
    except (OSError, http.client.HTTPException) as exc:
        return network_reason(exc), delivered
    finally:
        response.close()
