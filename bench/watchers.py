"""Watchers: what parked blocking queries and open event streams cost a distributor.

`python -m bench.watchers [--queries 1000] [--streams 1000] [--changes 30]`

A real distributor; a client process (uvloop, aiohttp) opens the blocking queries
(`/v1/members?index=&epoch=&wait=300s`, asked again after each answer) and the event
streams (`/v1/events`). The distributor's RSS (VmRSS) and CPU (utime + stime) are read
from /proc before, with every watcher open after a settle period, and over the
changes: members join one at a time (raw hello frames, bench/rawclient.py), each once
every watcher saw the one before, so each change wakes every watcher. Per change:
the time from dialling the joining member until the last watcher saw the new version.
Last, the distributor is stopped with every watcher still open: how long it takes.

The client shares the machine (on 2 CPUs, one each), so the wake-up times include its
own work of reading 2,000 answers; the CPU figures are the distributor's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import uvloop

from bench import blocking
from bench.procs import distributor
from bench.rawclient import Beats, RawClient, connect
from bench.report import _table
from bench.stats import percentile
from harness.ports import free_port
from harness.procs import cpu_seconds, raise_nofile, status_mb, stop

SETTLE = 3.0  # seconds with every watcher open before the distributor is read
WAIT = 60.0  # seconds for every watcher to see one change; a miss is reported, not hidden


class Tracker:
    """Counts the watchers that have seen the version being waited for."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.target = -1
        self.count = 0
        self.done = asyncio.Event()
        self.done_at = 0.0
        self.ready = 0  # streams that have their snapshot
        self.ended = 0  # watchers whose connection ended
        self.errors: list[str] = []

    def expect(self, version: int) -> None:
        self.target, self.count, self.done = version, 0, asyncio.Event()

    def saw(self, old: int, new: int) -> None:
        if old < self.target <= new:
            self.count += 1
            if self.count == self.total:
                self.done_at = time.monotonic()
                self.done.set()

    def end(self, exc: BaseException | None) -> None:
        self.ended += 1
        if exc is not None and len(self.errors) < 3:
            self.errors.append(repr(exc))


async def _blocking(
    session: aiohttp.ClientSession, base: str, epoch: str, version: int, tracker: Tracker
) -> None:
    def url(index: int) -> str:
        return f"{base}/v1/members?index={index}&epoch={epoch}&wait=300s"

    error: BaseException | None = None
    try:
        async for new in blocking.indexes(session, url, "X-Mesh-Index", version):
            tracker.saw(version, new)
            version = new
    except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
        error = exc  # the distributor stopped, or something worse: reported
    finally:
        tracker.end(error)


async def _stream(session: aiohttp.ClientSession, base: str, tracker: Tracker) -> None:
    error: BaseException | None = None
    try:
        async with session.get(f"{base}/v1/events") as resp:
            version: int | None = None
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    start = block.find(b"id: ")
                    if start < 0:
                        continue  # a keepalive comment
                    line = block[start : block.find(b"\n", start)]
                    new = int(line.rsplit(b":", 1)[1])
                    if version is None:
                        tracker.ready += 1  # the snapshot
                    else:
                        tracker.saw(version, new)
                    version = new
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        error = exc
    finally:
        tracker.end(error)


async def _client(
    port: int, http_port: int, queries: int, streams: int, changes: int, conn: Connection
) -> None:
    loop = asyncio.get_running_loop()
    base = f"http://127.0.0.1:{http_port}"
    tracker = Tracker(queries + streams)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        async with session.get("/v1/members") as resp:
            first = await resp.json()
        epoch, version = first["epoch"], first["version"]
        watchers = [
            asyncio.create_task(_blocking(session, base, epoch, version, tracker))
            for _ in range(queries)
        ] + [asyncio.create_task(_stream(session, base, tracker)) for _ in range(streams)]
        opened = time.monotonic()
        async with asyncio.timeout(WAIT):
            while tracker.ready + tracker.ended < streams:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        conn.send({"open_seconds": time.monotonic() - opened, "ended": tracker.ended})

        await loop.run_in_executor(None, conn.recv)  # go: the distributor has been read
        joiners: list[RawClient] = []
        beats = Beats(joiners)
        beats.start()
        seconds: list[float] = []
        missed = 0
        for i in range(changes):
            tracker.expect(version + i + 1)
            joiner = RawClient(i, expect=-1, prefix="w")
            started = time.monotonic()
            await connect(loop, joiner, port)
            joiners.append(joiner)
            try:
                async with asyncio.timeout(WAIT):
                    await tracker.done.wait()
                seconds.append(tracker.done_at - started)
            except TimeoutError:
                missed += 1
        conn.send(
            {
                "seconds": seconds,
                "missed": missed,
                "ended": tracker.ended,
                "errors": tracker.errors,
            }
        )

        await loop.run_in_executor(None, conn.recv)  # the distributor is stopped
        beats.stop()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for joiner in joiners:
            joiner.close()


def _client_process(
    port: int, http_port: int, queries: int, streams: int, changes: int, conn: Connection
) -> None:
    raise_nofile()
    uvloop.run(_client(port, http_port, queries, streams, changes, conn))


def _receive(pipe: Connection, seconds: float, what: str) -> Any:
    if not pipe.poll(seconds):
        raise RuntimeError(f"the watcher client did not report {what} within {seconds:g} s")
    return pipe.recv()


def _stop_timed(proc: subprocess.Popen[bytes]) -> tuple[float, str]:
    """SIGTERM, then the seconds until it exited and what it wrote on stderr."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    seconds = time.monotonic() - started
    errors = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    stop(proc)
    return seconds, errors


def run(
    queries: int = 1000, streams: int = 1000, changes: int = 30, settle: float = SETTLE
) -> dict[str, Any]:
    raise_nofile()
    port, http_port = free_port(), free_port()
    ctx = multiprocessing.get_context("fork")
    with distributor(port, http_port, changes) as proc:
        pid = proc.pid
        rss_idle, cpu_start = status_mb(pid, "VmRSS"), cpu_seconds(pid)
        parent, child = ctx.Pipe()
        client = ctx.Process(
            target=_client_process, args=(port, http_port, queries, streams, changes, child)
        )
        client.start()
        child.close()  # its death then ends our poll (EOFError)
        try:
            opened = _receive(parent, WAIT + 30, "its watchers open")
            cpu_opened = cpu_seconds(pid)
            time.sleep(settle)
            rss_open, cpu_settled = status_mb(pid, "VmRSS"), cpu_seconds(pid)
            parent.send("go")
            changed = _receive(parent, changes * (WAIT + 5) + 30, "the changes")
            rss_after, cpu_changed = status_mb(pid, "VmRSS"), cpu_seconds(pid)
            stop_seconds, stderr = _stop_timed(proc)
            parent.send("stop")
        finally:
            client.join(30)
            if client.is_alive():
                client.kill()
    seen = changed["seconds"]
    watchers = queries + streams
    return {
        "queries": queries,
        "streams": streams,
        "changes": changes,
        "rss_idle_mb": round(rss_idle, 1),
        "rss_open_mb": round(rss_open, 1),
        "rss_after_changes_mb": round(rss_after, 1),
        "kb_per_watcher": round((rss_open - rss_idle) * 1024 / watchers, 1) if watchers else None,
        "open_seconds": round(opened["open_seconds"], 3),
        "cpu_open_s": round(cpu_opened - cpu_start, 3),
        "cpu_idle_s_per_s": round((cpu_settled - cpu_opened) / settle, 4),
        "cpu_per_change_ms": round((cpu_changed - cpu_settled) * 1000 / changes, 2),
        "all_saw_p50_ms": round(percentile(seen, 50) * 1000, 2) if seen else None,
        "all_saw_p99_ms": round(percentile(seen, 99) * 1000, 2) if seen else None,
        "all_saw_max_ms": round(max(seen) * 1000, 2) if seen else None,
        "changes_missed": changed["missed"],
        "watchers_ended_early": changed["ended"],
        "client_errors": changed["errors"],
        "stop_seconds": round(stop_seconds, 3),
        "stop_tracebacks": stderr.count("Traceback"),
    }


def text(result: dict[str, Any]) -> str:
    r = result
    rows = [
        ["watchers", f"{r['queries']} blocking queries + {r['streams']} event streams"],
        ["opened in", f"{r['open_seconds']} s, {r['cpu_open_s']} s of distributor CPU"],
        [
            "RSS idle / open / after",
            f"{r['rss_idle_mb']} / {r['rss_open_mb']} / {r['rss_after_changes_mb']} MB",
        ],
        ["RSS per watcher", f"{r['kb_per_watcher']} KB"],
        ["CPU while idle, all open", f"{r['cpu_idle_s_per_s']} s/s"],
        ["CPU per change", f"{r['cpu_per_change_ms']} ms (over {r['changes']} changes)"],
        [
            "all watchers saw a change",
            f"p50 {r['all_saw_p50_ms']} ms, p99 {r['all_saw_p99_ms']} ms, "
            f"max {r['all_saw_max_ms']} ms",
        ],
        ["changes missed", f"{r['changes_missed']}"],
        ["watchers ended early", f"{r['watchers_ended_early']}"],
        ["stop with all open", f"{r['stop_seconds']} s, {r['stop_tracebacks']} tracebacks"],
    ]
    return _table(["distributor", "figure"], rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watchers", description=__doc__)
    parser.add_argument("--queries", type=int, default=1000, help="blocking queries (1000)")
    parser.add_argument("--streams", type=int, default=1000, help="event streams (1000)")
    parser.add_argument("--changes", type=int, default=30, help="members that join (30)")
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds (3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.queries, args.streams, args.changes, args.settle)
    if args.json:
        print(json.dumps(result))
        return 0
    print(text(result))
    if result["client_errors"]:
        print("client errors:", *result["client_errors"], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
