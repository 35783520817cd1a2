"""node/checker.py on loopback: real HTTP and TCP checks against an in-process aiohttp app.

Timing is generous: every wait is a deadline (seconds), never an exact time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from node.checker import Checker
from node.definitions import CheckDefinition, parse_service

BIG = 10 * 1024 * 1024  # bytes the /big route would send
DEADLINE = 10.0  # seconds any awaited condition may take, at most


@dataclass
class App:
    """The app under check: what it answers, and what it saw."""

    url: str
    port: int
    status: int = 200
    big_sent: int = 0
    big_end: str = ""  # how /big ended: "complete" or the error that cut it
    hang_entered: asyncio.Event = field(default_factory=asyncio.Event)
    hang_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def app() -> AsyncIterator[App]:
    state = App(url="", port=0)

    async def switch(request: web.Request) -> web.Response:
        return web.Response(status=state.status, text=f"answer {state.status}")

    async def hang(request: web.Request) -> web.Response:
        state.hang_entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state.hang_cancelled.set()  # the client went away: aiohttp cancels us
            raise
        raise AssertionError("unreachable")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = BIG
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while state.big_sent < BIG:
                await response.write(chunk)
                state.big_sent += len(chunk)
            state.big_end = "complete"
        except (ConnectionError, asyncio.CancelledError) as exc:
            state.big_end = type(exc).__name__
            raise
        return response

    async def echo(request: web.Request) -> web.Response:
        state.seen.append({"method": request.method, "headers": dict(request.headers)})
        return web.Response(text="seen")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/switch")

    application = web.Application()
    application.router.add_route("*", "/switch", switch)
    application.router.add_get("/hang", hang)
    application.router.add_get("/big", big)
    application.router.add_route("*", "/echo", echo)
    application.router.add_get("/moved", moved)
    # handler_cancellation: a handler learns that its client left (the hang tests see it)
    runner = web.AppRunner(application, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url, state.port = f"http://127.0.0.1:{port}", port
    try:
        yield state
    finally:
        await runner.cleanup()


@dataclass
class Running:
    checker: Checker
    task: asyncio.Task[None]
    changes: list[str]
    expired: list[str]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    changes: list[str] = []
    expired: list[str] = []
    checker = Checker(changes.append, expired.append)
    task = asyncio.create_task(checker.run())
    try:
        yield Running(checker, task, changes, expired)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def checks(*check: dict[str, Any]) -> tuple[CheckDefinition, ...]:
    return parse_service({"name": "app", "port": 1, "checks": list(check)}).checks


async def until(condition: Callable[[], bool], what: str) -> float:
    """Waits for `condition`, at most DEADLINE; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > DEADLINE:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def checker_tasks() -> list[asyncio.Task[Any]]:
    """The tasks running the Checker's own coroutines (run, and a check's run)."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").startswith("Checker.")
    ]


async def test_http_status_decides_passing_warning_critical(app: App, running: Running) -> None:
    checker = running.checker
    checker.add("a1", checks({"http": f"{app.url}/switch", "interval": "100ms"}), time.monotonic())
    assert checker.health("a1") == "critical"  # the initial status, before any run
    await until(lambda: checker.health("a1") == "passing", "a 200 is passing")
    (state,) = checker.states("a1")
    assert state.output == f"HTTP GET {app.url}/switch: 200 OK Output: answer 200"
    assert running.changes == ["a1"]

    app.status = 429
    await until(lambda: checker.health("a1") == "warning", "a 429 is a warning")
    assert "429 Too Many Requests Output: answer 429" in state.output
    app.status = 500
    await until(lambda: checker.health("a1") == "critical", "a 500 is critical")
    app.status = 204
    await until(lambda: checker.health("a1") == "passing", "a 204 is passing")
    assert running.changes == ["a1"] * 4


async def test_method_headers_and_redirects(app: App, running: Running) -> None:
    checker = running.checker
    definition = {
        "http": f"{app.url}/echo",
        "method": "PUT",
        "header": {"X-Check": ["one", "two"], "Authorization": ["Bearer t"]},
        "interval": "10s",
    }
    checker.add("e1", checks(definition), time.monotonic())
    await until(lambda: checker.health("e1") == "passing", "the echo check passes")
    seen = app.seen[0]
    assert seen["method"] == "PUT"
    assert seen["headers"]["Authorization"] == "Bearer t"
    assert seen["headers"]["X-Check"] in ("one", "one,two", "one, two")
    assert seen["headers"]["User-Agent"] == "Mesh Health Check"

    checker.add("r1", checks({"http": f"{app.url}/moved", "interval": "10s"}), time.monotonic())
    await until(lambda: checker.health("r1") == "passing", "a redirect is followed")


async def test_a_hanging_app_is_critical_after_the_timeout_and_the_loop_runs_on(
    app: App, running: Running, record_figure: Callable[..., None]
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        checker = running.checker
        definition = {
            "http": f"{app.url}/hang",
            "interval": "2s",
            "timeout": "500ms",
            "status": "passing",
        }
        checker.add("h1", checks(definition), time.monotonic())
        await asyncio.wait_for(app.hang_entered.wait(), DEADLINE)
        took = await until(lambda: checker.health("h1") == "critical", "a hang times out")
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
    (state,) = checker.states("h1")
    assert state.output == f"HTTP GET {app.url}/hang: timed out after 0.5s"
    record_figure("hanging check: ticks of a 10 ms ticker while it hung", ticks, "")
    record_figure("hanging check: until critical", took)
    # a 0.5 s hang that blocked the loop would leave the ticker near 0 ticks
    assert ticks >= 10
    # the timed-out request was dropped: the app's handler learns its client left
    await asyncio.wait_for(app.hang_cancelled.wait(), DEADLINE)


async def test_a_10_mb_body_is_read_only_up_to_the_cap(
    app: App, running: Running, record_figure: Callable[..., None]
) -> None:
    checker = running.checker
    start = time.monotonic()
    checker.add("b1", checks({"http": f"{app.url}/big", "interval": "10s"}), start)
    await until(lambda: checker.health("b1") == "passing", "the big check passes")
    took = time.monotonic() - start
    (state,) = checker.states("b1")
    prefix = f"HTTP GET {app.url}/big: 200 OK Output: "
    assert state.output == prefix + "x" * 4096
    # the app sees its connection closed before it could send it all
    await until(lambda: app.big_end != "", "the app's /big handler ends")
    record_figure("10 MB check: bytes the app got to send", app.big_sent, "B")
    record_figure("10 MB check: until passing", took)
    assert app.big_end != "complete"
    assert app.big_sent < BIG


async def test_tcp_check_passing_and_refused(app: App, running: Running) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]  # nothing listens there once closed
    checker = running.checker
    now = time.monotonic()
    checker.add("t1", checks({"tcp": f"127.0.0.1:{app.port}", "interval": "10s"}), now)
    checker.add(
        "t2",
        checks({"tcp": f"127.0.0.1:{free}", "interval": "10s", "status": "passing"}),
        now,
    )
    await until(lambda: checker.health("t1") == "passing", "a connect passes")
    await until(lambda: checker.health("t2") == "critical", "a refused connect is critical")
    assert checker.states("t1")[0].output == f"TCP connect 127.0.0.1:{app.port}: Success"
    output = checker.states("t2")[0].output
    assert output.startswith(f"TCP connect 127.0.0.1:{free}: ")
    assert "refused" in output.lower() or "connect" in output.lower()


async def test_the_worst_check_wins_and_no_check_is_passing(app: App, running: Running) -> None:
    checker = running.checker
    both = checks(
        {"http": f"{app.url}/switch", "interval": "10s"},
        {"http": f"{app.url}/hang", "interval": "1s", "timeout": "200ms"},
    )
    checker.add("w1", both, time.monotonic())
    await until(lambda: checker.states("w1")[0].status == "passing", "the first passes")
    await until(lambda: "timed out" in checker.states("w1")[1].output, "the second times out")
    assert checker.health("w1") == "critical"
    checker.add("n1", (), time.monotonic())
    assert checker.health("n1") == "passing"
    assert checker.health("unknown") == "passing"
    assert checker.states("unknown") == []


async def test_deregister_critical_service_after(running: Running) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    definition = {
        "tcp": f"127.0.0.1:{free}",
        "interval": "200ms",
        "DeregisterCriticalServiceAfter": "1s",
    }
    running.checker.add("d1", checks(definition), time.monotonic())
    await until(lambda: running.expired == ["d1"], "the instance expires")
    await asyncio.sleep(0.5)
    assert running.expired == ["d1"]  # told once


async def test_remove_cancels_a_check_in_flight(app: App, running: Running) -> None:
    checker = running.checker
    # a timeout far past the deadline: only remove() can end this run in time
    hang = {"http": f"{app.url}/hang", "interval": "60s", "timeout": "60s"}
    checker.add("h2", checks(hang), time.monotonic())
    await asyncio.wait_for(app.hang_entered.wait(), DEADLINE)
    assert len(checker_tasks()) == 2  # run(), and the check hanging
    checker.remove("h2")
    await until(lambda: len(checker_tasks()) == 1, "only run() is left")
    assert [t.get_coro().__qualname__ for t in checker_tasks()] == ["Checker.run"]
    await asyncio.wait_for(app.hang_cancelled.wait(), DEADLINE)  # its connection was closed
    assert checker.states("h2") == []
    assert checker.health("h2") == "passing"
    assert running.changes == []  # a removed check reports nothing


async def test_replacing_an_instance_cancels_its_old_checks(app: App, running: Running) -> None:
    checker = running.checker
    hang = {"http": f"{app.url}/hang", "interval": "60s", "timeout": "60s"}
    checker.add("x1", checks(hang), time.monotonic())
    await asyncio.wait_for(app.hang_entered.wait(), DEADLINE)
    checker.add("x1", checks({"http": f"{app.url}/switch", "interval": "60s"}), time.monotonic())
    await until(lambda: checker.health("x1") == "passing", "the new check runs")
    await asyncio.wait_for(app.hang_cancelled.wait(), DEADLINE)
    assert len(checker.states("x1")) == 1


async def test_run_cancelled_leaves_no_task_and_closes_the_session(app: App) -> None:
    checker = Checker(lambda _: None, lambda _: None)
    hang = {"http": f"{app.url}/hang", "interval": "60s", "timeout": "60s"}
    checker.add("h3", checks(hang), time.monotonic())
    task = asyncio.create_task(checker.run())
    await asyncio.wait_for(app.hang_entered.wait(), DEADLINE)
    session = checker._session
    assert session is not None and len(checker_tasks()) == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert checker_tasks() == []
    assert session.closed and checker._session is None
    await asyncio.wait_for(app.hang_cancelled.wait(), DEADLINE)

    # started again, the checks that were cut off run again
    app.hang_entered.clear()
    task = asyncio.create_task(checker.run())
    try:
        await asyncio.wait_for(app.hang_entered.wait(), DEADLINE)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert checker_tasks() == []
