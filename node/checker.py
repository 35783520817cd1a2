"""The node's health checker: runs every instance's HTTP and TCP checks, on one loop.

One Checker a node, one task (`run`, owned by the node). Due times live in a heap; each
due check runs as a short task the Checker keeps in a set, under `asyncio.timeout` of its
Timeout, and schedules its next run when it ends (Consul's rhythm: Interval after the end
of a run, so runs of one check never overlap). No task outlives its run: `remove` cancels
an instance's runs in flight, and `run` cancels and awaits all of them when it stops.

What a result means is node/checks.py's (CheckState); this file only probes:
- HTTP: one shared aiohttp session; the definition's method and headers; redirects
  followed (Consul's default); 2xx passing, 429 warning, anything else critical. At most
  `max_output` bytes of the body are read, then the connection is closed, so an app that
  answers with 10 MB costs 4 KiB and a socket, not 10 MB.
- TCP: a connect is passing; the connection is closed at once.
- a refused connection, a timeout or any other error is critical, with the error as output.

The clock is time.monotonic(): `now` given to `add` must be on it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import structlog

from node.checks import CheckState, worst
from node.definitions import MAX_CHECKS, CheckDefinition
from shared.wire import MAX_INSTANCES, parse_address

log = structlog.get_logger()

USER_AGENT = "Mesh Health Check"
# every check of a full node may be in flight at once; none should wait for a socket
CONNECTION_LIMIT = MAX_INSTANCES * MAX_CHECKS

_RUN = 0  # heap entry kinds
_REAP = 1


@dataclass(eq=False, slots=True)
class _Check:
    """One registered check: its state, and its run in flight if any."""

    instance_id: str
    state: CheckState
    live: bool = True  # False once removed or replaced: its heap entries are dropped
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Checker:
    """Runs the checks of every instance this node registered (see the module doc)."""

    def __init__(
        self,
        on_change: Callable[[str], None],
        on_expired: Callable[[str], None],
        max_output: int = 4096,
    ) -> None:
        # on_change(id): that instance's health (the worst of its checks) changed;
        # on_expired(id): one of its checks was critical for DeregisterCriticalServiceAfter
        self._on_change = on_change
        self._on_expired = on_expired
        self._max_output = max_output
        self._instances: dict[str, list[_Check]] = {}
        self._expired: set[str] = set()  # told once: the node removes it
        self._heap: list[tuple[float, int, int, _Check]] = []
        self._seq = itertools.count()  # ties in the heap break by order of push
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    # -- the node's side ------------------------------------------------------

    def add(self, instance_id: str, checks: Sequence[CheckDefinition], now: float) -> None:
        """Registers an instance's checks (replacing any it had); each runs at once."""
        self.remove(instance_id)
        entries = [_Check(instance_id, CheckState(d, now)) for d in checks]
        self._instances[instance_id] = entries
        for check in entries:
            self._push(0.0, _RUN, check)  # due since the clock's start: at once
            self._push_reap(check)

    def remove(self, instance_id: str) -> None:
        """Forgets an instance: its runs in flight are cancelled, nothing of it is left."""
        self._expired.discard(instance_id)
        for check in self._instances.pop(instance_id, ()):
            check.live = False
            if check.task is not None:
                check.task.cancel()  # its done-callback drops it from the set
        # stale heap entries are skipped when due; rebuild when they are most of it
        if len(self._heap) > 64 and len(self._heap) > 4 * self._live_count():
            self._heap = [item for item in self._heap if item[3].live]
            heapq.heapify(self._heap)

    def health(self, instance_id: str) -> str:
        """The worst of the instance's check statuses; "passing" with no check."""
        return worst(c.state.status for c in self._instances.get(instance_id, ()))

    def states(self, instance_id: str) -> list[CheckState]:
        """The instance's checks, in the order they were defined (GET /v1/agent/checks)."""
        return [c.state for c in self._instances.get(instance_id, ())]

    async def run(self) -> None:
        """Runs due checks until cancelled; then cancels and awaits every run in flight
        and closes the HTTP session."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT, force_close=True),
            cookie_jar=aiohttp.DummyCookieJar(),  # a check carries no state between runs
            timeout=aiohttp.ClientTimeout(total=None),  # each run's asyncio.timeout rules
            auto_decompress=False,  # we ask for identity; never inflate a body we cap
            raise_for_status=False,
        )
        try:
            while True:
                self._wake.clear()
                delay = self._start_due(time.monotonic())
                if delay is None:
                    await self._wake.wait()
                    continue
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            session = self._session
            try:
                tasks = list(self._tasks)
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                self._session = None
                await session.close()

    # -- scheduling -------------------------------------------------------------

    def _live_count(self) -> int:
        return sum(len(checks) for checks in self._instances.values())

    def _push(self, due: float, kind: int, check: _Check) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), kind, check))
        self._wake.set()

    def _push_reap(self, check: _Check) -> None:
        """A look at the deregister timer when it would run out, if it is running."""
        state = check.state
        after = state.definition.deregister_after
        if after is not None and state.critical_since is not None:
            self._push(state.critical_since + after, _REAP, check)

    def _start_due(self, now: float) -> float | None:
        """Starts every check that is due; the seconds until the next one, None if none."""
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, check = heapq.heappop(self._heap)
            if not check.live:
                continue
            if kind == _REAP:
                self._reap(check, now)
            elif check.task is None:  # never two runs of one check
                task = asyncio.create_task(self._run_one(check))
                check.task = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return self._heap[0][0] - now if self._heap else None

    def _reap(self, check: _Check, now: float) -> None:
        instance_id = check.instance_id
        if instance_id not in self._expired and check.state.deregister_due(now):
            self._expired.add(instance_id)
            log.info("instance critical too long", instance=instance_id, check=_name(check))
            self._notify(self._on_expired, instance_id)

    async def _run_one(self, check: _Check) -> None:
        definition = check.state.definition
        cut = False
        try:
            try:
                async with asyncio.timeout(definition.timeout):
                    if definition.kind == "http":
                        result, output = await self._http(definition)
                    else:
                        result, output = await self._tcp(definition)
            except TimeoutError:
                result = "critical"
                output = f"{_what(definition)}: timed out after {definition.timeout:g}s"
            except Exception as exc:  # whatever failed, the app did not answer as it should
                result = "critical"
                output = f"{_what(definition)}: {_describe(exc)}"[: self._max_output]
            if check.live:
                self._record(check, result, output)
        except asyncio.CancelledError:
            cut = True
            raise
        finally:
            check.task = None
            if check.live:
                # cut off by run()'s end (a removed check is not live): the next run()
                # starts it at once, as it would a new one
                self._push(0.0 if cut else time.monotonic() + definition.interval, _RUN, check)

    def _record(self, check: _Check, result: str, output: str) -> None:
        instance_id = check.instance_id
        before = self.health(instance_id)
        was = check.state.status
        if not check.state.record(result, output, time.monotonic()):
            return
        log.info(
            "check status",
            instance=instance_id,
            check=_name(check),
            status=check.state.status,
            was=was,
        )
        self._push_reap(check)
        if self.health(instance_id) != before:
            self._notify(self._on_change, instance_id)

    def _notify(self, callback: Callable[[str], None], instance_id: str) -> None:
        try:
            callback(instance_id)
        except Exception:  # the node's bug must not stop the checks
            log.exception("check callback failed", instance=instance_id)

    # -- the probes ---------------------------------------------------------------

    async def _http(self, definition: CheckDefinition) -> tuple[str, str]:
        session = self._session
        assert session is not None, "checks run only inside run()"
        headers = list(definition.headers)
        given = {name.lower() for name, _ in headers}
        # Consul's defaults, unless the definition sets them
        for name, value in (
            ("User-Agent", USER_AGENT),
            ("Accept", "text/plain, text/*, */*"),
            ("Accept-Encoding", "identity"),  # a capped body is readable only uncompressed
        ):
            if name.lower() not in given:
                headers.append((name, value))
        async with session.request(
            definition.method,
            definition.target,
            headers=headers,
            allow_redirects=True,
            max_redirects=10,  # Go's http.Client stops after 10, as Consul's checks do
        ) as response:
            body = bytearray()
            while len(body) < self._max_output:
                chunk = await response.content.read(self._max_output - len(body))
                if not chunk:
                    break
                body += chunk
            if not response.content.at_eof():
                # more is coming: drop the connection rather than read (or drain) the rest
                response.close()
            status = response.status
            line = f"{status} {response.reason or ''}".rstrip()
        if 200 <= status <= 299:
            result = "passing"
        elif status == 429:  # Too Many Requests: alive but shedding load
            result = "warning"
        else:
            result = "critical"
        text = body.decode("utf-8", errors="replace")
        return result, f"HTTP {definition.method} {definition.target}: {line} Output: {text}"

    async def _tcp(self, definition: CheckDefinition) -> tuple[str, str]:
        host, port = parse_address(definition.target)
        _, writer = await asyncio.open_connection(host, port)
        writer.close()  # a connect is all a TCP check asks
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the app closing first (a reset) still answered the connect
        return "passing", f"TCP connect {definition.target}: Success"


def _name(check: _Check) -> str:
    return check.state.definition.check_id


def _what(definition: CheckDefinition) -> str:
    if definition.kind == "http":
        return f"HTTP {definition.method} {definition.target}"
    return f"TCP connect {definition.target}"


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
