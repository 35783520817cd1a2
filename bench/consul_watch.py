"""Consul blocking queries: how fast 1,000 watchers of one service wake, and that a change
of another service wakes none of them (an index per service).

`python -m bench.consul_watch [--watchers 1000] [--changes 10] [--json]`

A real distributor and two nodes: `a-agent` registers the instances of service `a`,
`b-agent` those of `b` (PUT /v1/agent/service/register, as Consul's clients do). The
watchers are blocking queries on the distributor, `GET /v1/health/service/a?index=&wait=300s`,
each asked again at once after its answer (what py-consul's watch loops and Prometheus do).
First `b` changes `--changes` times (each a new instance; the next once the distributor's
own answer for `b` moved, then a settle): every answer a watcher of `a` gets meanwhile is
a spurious wake-up. Then `a` changes `--changes` times, each once every watcher saw the
one before: per watcher and change, the time from the PUT on the agent to the watcher's
answer (the node's record update reaching the distributor included). The client shares
the machine with the three programs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiohttp
import orjson
import uvloop

from bench import blocking
from bench.procs import program
from bench.stats import percentile
from harness.ports import free_port
from harness.procs import raise_nofile

WAIT = 60.0  # seconds for every watcher to see one change; a miss is reported, not hidden
SETTLE = 1.0  # seconds after a change of `b` for any spurious wake-up to arrive


class Watchers:
    """The answers the watchers of `a` got: when, and at what index."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.answers: list[tuple[float, int]] = []  # (monotonic time, index)
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    def got(self, index: int) -> None:
        self.answers.append((time.monotonic(), index))
        self.changed.set()

    def since(self, started: float, above: int) -> list[float]:
        return [at - started for at, index in self.answers if at >= started and index > above]


async def _watch(session: aiohttp.ClientSession, index: int, watchers: Watchers) -> None:
    def url(index: int) -> str:
        return f"/v1/health/service/a?index={index}&wait=300s"

    try:
        async for new in blocking.indexes(session, url, "X-Consul-Index", index):
            watchers.got(new)
    except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
        if len(watchers.errors) < 3:
            watchers.errors.append(repr(exc))


async def _register(session: aiohttp.ClientSession, port: int, service: str, n: int) -> None:
    body = orjson.dumps({"name": service, "id": f"{service}-{n}", "port": 1000 + n})
    url = f"http://127.0.0.1:{port}/v1/agent/service/register"
    async with session.put(url, data=body) as resp:  # no Content-Type: as py-consul
        assert resp.status == 200, await resp.text()


async def _index(session: aiohttp.ClientSession, service: str) -> int:
    async with session.get(f"/v1/health/service/{service}") as resp:
        await resp.read()
        return int(resp.headers["X-Consul-Index"])


async def _until(what: str, check: Any, timeout: float = WAIT) -> None:
    """Ask another process until `check()` holds (its state is there, not in an event)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise TimeoutError(f"no {what} within {timeout} s") from None


async def _measure(
    http_port: int, a_port: int, b_port: int, count: int, changes: int
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0)
    base = f"http://127.0.0.1:{http_port}"
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        await _register(session, a_port, "a", 0)
        await _register(session, b_port, "b", 0)

        async def both_seen() -> bool:
            async with session.get("/v1/catalog/services") as resp:
                return {"a", "b"} <= set(await resp.json())

        await _until("a and b at the distributor", both_seen)
        watchers = Watchers(count)
        start_index = await _index(session, "a")
        tasks = [asyncio.create_task(_watch(session, start_index, watchers)) for _ in range(count)]
        await asyncio.sleep(SETTLE)  # every watcher parked
        try:
            # the other service changes: no watcher of `a` should answer
            spurious_before = len(watchers.answers)
            for n in range(1, changes + 1):
                before = await _index(session, "b")
                await _register(session, b_port, "b", n)

                async def b_moved(before: int = before) -> bool:
                    return await _index(session, "b") > before

                await _until("b's change at the distributor", b_moved)
            await asyncio.sleep(SETTLE)
            spurious = len(watchers.answers) - spurious_before

            # its own service changes: every watcher answers, how fast
            samples: list[float] = []
            all_saw: list[float] = []
            missed = 0
            index = await _index(session, "a")
            for n in range(1, changes + 1):
                started = time.monotonic()
                await _register(session, a_port, "a", n)
                try:
                    async with asyncio.timeout(WAIT):
                        while len(watchers.since(started, index)) < count:
                            watchers.changed.clear()
                            await watchers.changed.wait()
                except TimeoutError:
                    missed += 1
                seen = watchers.since(started, index)
                samples += seen
                if seen:
                    all_saw.append(max(seen))
                index = await _index(session, "a")
                await asyncio.sleep(0.2)  # every watcher parked again
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    ms = sorted(s * 1000 for s in samples)
    return {
        "watchers": count,
        "changes": changes,
        "spurious_wakeups": spurious,
        "wake_p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "wake_p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "all_saw_p50_ms": round(percentile(sorted(all_saw), 50) * 1000, 2) if all_saw else None,
        "samples": len(ms),
        "changes_missed": missed,
        "client_errors": watchers.errors,
    }


def run(watchers: int = 1000, changes: int = 10) -> dict[str, Any]:
    """The row: a distributor and two agents started here, measured, stopped."""
    raise_nofile()
    port, http_port = free_port(), free_port()
    a_http, b_http = free_port(), free_port()
    quiet = ["--log-level", "warning", "--host", "127.0.0.1"]
    d_args = [*quiet, "--port", str(port), "--http-port", str(http_port)]
    env = {"MESH_MAX_CONNECTIONS": str(watchers + 1024)}

    def agent(name: str, http: int) -> list[str]:
        return [*quiet, "--name", name, "--port", str(free_port()), "--http-port", str(http),
                "--distributor", f"127.0.0.1:{port}"]  # fmt: skip

    with contextlib.ExitStack() as stack:
        stack.enter_context(program("distributor", d_args, env, http_port))
        stack.enter_context(program("node", agent("a-agent", a_http), {}, a_http))
        stack.enter_context(program("node", agent("b-agent", b_http), {}, b_http))
        return uvloop.run(_measure(http_port, a_http, b_http, watchers, changes))


def row(result: dict[str, Any]) -> str:
    return (
        f"consul blocking queries, {result['watchers']:,} watchers of a: wake p50 "
        f"{result['wake_p50_ms']} ms, p99 {result['wake_p99_ms']} ms (all saw, p50 "
        f"{result['all_saw_p50_ms']} ms); {result['changes']} changes of b woke "
        f"{result['spurious_wakeups']} of them"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consul_watch", description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(args.watchers, args.changes)
    print(json.dumps(result) if args.json else row(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
