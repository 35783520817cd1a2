"""distributor/http.py and events.py: members, services, blocking queries, the event stream.

Served by aiohttp's test server on loopback, against a Registry the test drives and a
VersionWatch it notifies, as the distributor's server does on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from distributor.http import (
    DEFAULT_WAIT,
    MAX_WAIT,
    WATCHERS,
    BadQuery,
    Watchers,
    make_app,
    parse_blocking,
    parse_wait,
)
from distributor.registry import HISTORY, Registry
from distributor.watch import VersionWatch
from shared.wire import RECORD_FIELDS, Member

EPOCH = "epoch-1"
DEADLINE = 10.0  # seconds: generous; nothing here should take more than a fraction of it
# a member as the HTTP API shows it: every field of the record, always, and since when
DOCUMENT_FIELDS = {*RECORD_FIELDS, "connected_since"}


def member(i: int, incarnation: int = 1, **fields: Any) -> Member:
    return Member(f"id-{i}", f"node-{i}", f"10.0.0.{i % 250}:9010", incarnation, **fields)


@dataclass
class Api:
    registry: Registry
    watch: VersionWatch
    client: TestClient
    watchers: Watchers
    joined: dict[int, Member] = field(default_factory=dict)

    def join(self, i: int, **fields: Any) -> Member:
        """Register member i (as the distributor's server would) and wake the watchers."""
        m = member(i, **fields)
        self.registry.register(m, now=1_700_000_000.0 + i)
        self.joined[i] = m
        self.watch.notify()
        return m

    def update(self, i: int, **fields: Any) -> Member:
        old = self.joined[i]
        m = member(i, incarnation=old.incarnation + 1, **fields)
        assert self.registry.update(m) is not None
        self.joined[i] = m
        self.watch.notify()
        return m

    def leave(self, i: int, reason: str = "leave") -> None:
        assert self.registry.unregister(self.joined.pop(i), reason) is not None
        self.watch.notify()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, ClientResponse]:
        async with asyncio.timeout(DEADLINE):
            resp = await self.client.get(path, **kwargs)
            return resp.status, await resp.json(), resp

    async def until_parked(self, count: int = 1) -> None:
        """Until `count` blocking queries wait."""
        await until(lambda: self.watchers.parked >= count)


async def until(predicate: Callable[[], bool]) -> None:
    """Polled with a deadline: the server counts its watchers but signals nothing."""
    async with asyncio.timeout(DEADLINE):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serve(keepalive: float = 15.0, write_timeout: float = 30.0) -> AsyncIterator[Api]:
    registry, watch = Registry(EPOCH), VersionWatch()
    app = make_app(registry, watch, keepalive=keepalive, write_timeout=write_timeout)
    async with TestClient(TestServer(app)) as client:
        yield Api(registry, watch, client, app[WATCHERS])


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serve() as served:
        yield served


def ids(doc: dict[str, Any]) -> list[str]:
    return [m["id"] for m in doc["members"]]


# -- /v1/members: records and filters -------------------------------------------------


async def test_members_show_every_field_of_the_record(api: Api) -> None:
    api.join(1, http="10.0.0.1:9110", services=("web",), tags=("v2",), meta=(("zone", "a"),))
    api.join(2)
    status, doc, _ = await api.get("/v1/members")
    assert status == 200
    assert doc["epoch"] == EPOCH and doc["version"] == 2
    first, second = doc["members"]
    assert set(first) == DOCUMENT_FIELDS and set(second) == DOCUMENT_FIELDS
    assert first == {
        **member(1).document(),
        "http": "10.0.0.1:9110",
        "services": ["web"],
        "tags": ["v2"],
        "meta": {"zone": "a"},
        "connected_since": first["connected_since"],
    }
    assert first["connected_since"].startswith("2023-11-14T22:13:21")
    assert second["services"] == [] and second["meta"] == {} and second["draining"] is False


async def test_members_filter_by_service_and_every_tag(api: Api) -> None:
    api.join(1, services=("web",), tags=("v1", "zone-a"))
    api.join(2, services=("web", "db"), tags=("v2", "zone-a"))
    api.join(3, services=("db",), tags=("v2",))
    api.join(4)
    assert ids((await api.get("/v1/members?service=web"))[1]) == ["id-1", "id-2"]
    assert ids((await api.get("/v1/members?service=db"))[1]) == ["id-2", "id-3"]
    assert ids((await api.get("/v1/members?tag=v2"))[1]) == ["id-2", "id-3"]
    assert ids((await api.get("/v1/members?tag=zone-a&tag=v2"))[1]) == ["id-2"]
    assert ids((await api.get("/v1/members?service=db&tag=v2"))[1]) == ["id-2", "id-3"]
    assert ids((await api.get("/v1/members?service=web&tag=v2&tag=zone-a"))[1]) == ["id-2"]
    status, doc, _ = await api.get("/v1/members?service=cache")
    assert status == 200 and doc["members"] == [] and doc["version"] == 4
    assert ids((await api.get("/v1/members?tag=v1&tag=v2"))[1]) == []


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("service=", "service"),
        ("service=a%20b", "service"),
        ("service=-x", "service"),
        ("service=web&service=db", "service"),
        ("tag=ok&tag=no%21", "tag"),
        ("tag=" + "x" * 64, "tag"),
    ],
)
async def test_bad_filters_are_400(api: Api, query: str, word: str) -> None:
    status, doc, _ = await api.get(f"/v1/members?{query}")
    assert status == 400
    assert word in doc["error"]


@pytest.mark.parametrize("path", ["/v1/members", "/v1/services", "/v1/services/web"])
async def test_answers_carry_the_index_and_the_epoch(api: Api, path: str) -> None:
    for i in range(3):
        api.join(i, services=("web",))
    _, doc, resp = await api.get(path)
    assert resp.headers["X-Mesh-Index"] == "3" == str(doc["version"])
    assert resp.headers["X-Mesh-Epoch"] == EPOCH == doc["epoch"]
    assert resp.content_type == "application/json"


# -- blocking queries -------------------------------------------------------------------


async def test_a_past_index_answers_at_once(api: Api) -> None:
    api.join(1)
    api.join(2)
    # a 300 s wait: only an immediate answer beats the test's deadline
    status, doc, resp = await api.get(f"/v1/members?index=1&epoch={EPOCH}&wait=300s")
    assert status == 200 and doc["version"] == 2 and ids(doc) == ["id-1", "id-2"]
    assert resp.headers["X-Mesh-Index"] == "2"


async def test_another_epoch_answers_at_once(api: Api) -> None:
    api.join(1)
    status, doc, resp = await api.get("/v1/members?index=1&epoch=old-run&wait=5m")
    assert status == 200 and doc["version"] == 1
    assert resp.headers["X-Mesh-Epoch"] == EPOCH


async def test_an_index_above_the_version_answers_at_once(api: Api) -> None:
    api.join(1)
    status, doc, _ = await api.get(f"/v1/members?index=50&epoch={EPOCH}&wait=300")
    assert status == 200 and doc["version"] == 1
    status, doc, _ = await api.get("/v1/members?index=50")  # no epoch given: the same
    assert status == 200 and doc["version"] == 1


async def test_a_parked_query_answers_when_the_version_moves(api: Api) -> None:
    api.join(1)
    query = asyncio.create_task(api.get(f"/v1/members?index=1&epoch={EPOCH}&wait=300s"))
    await api.until_parked()
    assert not query.done()
    api.join(2)
    status, doc, resp = await query
    assert status == 200 and doc["version"] == 2 and ids(doc) == ["id-1", "id-2"]
    assert resp.headers["X-Mesh-Index"] == "2"
    assert api.watchers.parked == 0


async def test_an_empty_epoch_is_none(api: Api) -> None:
    """A shell loop's first query: `index=0&epoch=` parks like `index=0` alone."""
    query = asyncio.create_task(api.get("/v1/members?index=0&epoch=&wait=300s"))
    await api.until_parked()
    api.join(1)
    status, doc, _ = await query
    assert status == 200 and doc["version"] == 1


async def test_index_zero_waits_for_the_first_change(api: Api) -> None:
    query = asyncio.create_task(api.get("/v1/members?index=0"))  # the default wait: 300 s
    await api.until_parked()
    api.join(1)
    _, doc, _ = await query
    assert doc["version"] == 1 and ids(doc) == ["id-1"]


async def test_many_parked_queries_all_wake_on_one_change(api: Api) -> None:
    api.join(1)
    queries = [asyncio.create_task(api.get("/v1/members?index=1&wait=5m")) for _ in range(20)]
    await api.until_parked(20)
    api.join(2)
    answers = await asyncio.gather(*queries)
    assert {doc["version"] for _, doc, _ in answers} == {2}


async def test_a_filtered_query_wakes_on_any_change(api: Api) -> None:
    api.join(1, services=("web",))
    query = asyncio.create_task(api.get("/v1/members?service=web&index=1&wait=300s"))
    await api.until_parked()
    api.join(2, services=("db",))  # not a web member: the version moves all the same
    status, doc, resp = await query
    assert status == 200 and doc["version"] == 2 and ids(doc) == ["id-1"]
    assert resp.headers["X-Mesh-Index"] == "2"


async def test_without_a_change_it_answers_after_the_wait_with_the_same_body(api: Api) -> None:
    api.join(1)
    _, before, _ = await api.get("/v1/members")
    started = time.monotonic()
    query = asyncio.create_task(api.get(f"/v1/members?index=1&epoch={EPOCH}&wait=1s"))
    await api.until_parked()
    api.watch.notify()  # a wake-up without a new version does not end the wait
    status, doc, resp = await query
    assert time.monotonic() - started >= 0.9
    assert status == 200 and doc == before
    assert resp.headers["X-Mesh-Index"] == "1"
    assert api.watchers.parked == 0


async def test_the_body_is_made_after_the_wait(api: Api) -> None:
    api.join(1)
    query = asyncio.create_task(api.get("/v1/members?index=1"))
    await api.until_parked()
    # two changes before the woken query runs: it answers with both
    api.join(2)
    api.leave(1)
    _, doc, resp = await query
    assert doc["version"] == 3 and ids(doc) == ["id-2"] and resp.headers["X-Mesh-Index"] == "3"


async def test_shutdown_answers_parked_queries_at_once(api: Api) -> None:
    api.join(1)
    query = asyncio.create_task(api.get("/v1/members?index=1&wait=300s"))
    await api.until_parked()
    await api.watchers.shutdown(api.client.app)  # what aiohttp's on_shutdown calls
    status, doc, _ = await query
    assert status == 200 and doc["version"] == 1


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("index=abc", "index"),
        ("index=-1", "index"),
        ("index=1.5", "index"),
        ("index=", "index"),
        ("index=1&index=2", "index"),
        ("index=1&wait=abc", "wait"),
        ("index=1&wait=-1s", "wait"),
        ("index=1&wait=5h", "wait"),
        ("index=1&wait=1e3", "wait"),
        ("index=1&wait=", "wait"),
        ("index=1&wait=10ms", "wait"),
        ("wait=soon", "wait"),
        ("index=1&epoch=" + "e" * 65, "epoch"),
        ("index=1&epoch=a&epoch=b", "epoch"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/members", "/v1/services", "/v1/services/web"])
async def test_bad_blocking_parameters_are_400(api: Api, path: str, query: str, word: str) -> None:
    status, doc, resp = await api.get(f"{path}?{query}")
    assert status == 400
    assert set(doc) == {"error"} and word in doc["error"]
    assert "X-Mesh-Index" not in resp.headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("2.5", 2.5),
        (".5s", 0.5),
        ("30s", 30.0),
        ("0", 0.0),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("300s", 300.0),
        ("301", MAX_WAIT),
        ("10m", MAX_WAIT),
        ("9" * 400, MAX_WAIT),
    ],
)
def test_wait_is_seconds_or_a_number_with_s_or_m_cut_to_300(text: str, seconds: float) -> None:
    assert parse_wait(text) == seconds


def test_index_without_wait_waits_the_default_300_s() -> None:
    from multidict import MultiDict

    blocking = parse_blocking(MultiDict(index="7"))
    assert (blocking.index, blocking.epoch, blocking.wait) == (7, None, DEFAULT_WAIT)
    assert DEFAULT_WAIT == 300.0
    assert parse_blocking(MultiDict()).index is None
    with pytest.raises(BadQuery, match="index"):
        parse_blocking(MultiDict(index="٣"))  # a digit, but not an ASCII one


# -- services ---------------------------------------------------------------------------


async def test_services_count_providers_and_union_their_tags(api: Api) -> None:
    api.join(1, services=("web", "db"), tags=("v2", "zone-a"))
    api.join(2, services=("web",), tags=("v1", "v2"), draining=True)
    api.join(3, services=("cache",))
    api.join(4, tags=("lonely",))
    status, doc, _ = await api.get("/v1/services")
    assert status == 200
    assert doc == {
        "epoch": EPOCH,
        "version": 4,
        "services": {
            "cache": {"members": 1, "instances": 0, "passing": 0, "tags": []},
            "db": {"members": 1, "instances": 0, "passing": 0, "tags": ["v2", "zone-a"]},
            "web": {
                "members": 2,
                "instances": 0,
                "passing": 0,
                "tags": ["v2", "zone-a", "v1"],
            },  # draining counted
        },
    }
    assert list(doc["services"]) == ["cache", "db", "web"]  # sorted by name


async def test_services_empty(api: Api) -> None:
    status, doc, _ = await api.get("/v1/services")
    assert status == 200 and doc == {"epoch": EPOCH, "version": 0, "services": {}}


async def test_one_service_lists_its_providers_records(api: Api) -> None:
    api.join(1, services=("web",))
    api.join(2, services=("db",))
    api.join(3, services=("db", "web"), draining=True)
    status, doc, _ = await api.get("/v1/services/web")
    assert status == 200
    assert doc["epoch"] == EPOCH and doc["version"] == 3 and doc["service"] == "web"
    assert ids(doc) == ["id-1", "id-3"]
    assert all(set(m) == DOCUMENT_FIELDS for m in doc["members"])
    assert doc["members"][1]["draining"] is True


async def test_an_unknown_service_is_an_empty_list(api: Api) -> None:
    api.join(1, services=("web",))
    status, doc, _ = await api.get("/v1/services/nothing")
    assert status == 200 and doc == {
        "epoch": EPOCH,
        "version": 1,
        "service": "nothing",
        "members": [],
        "instances": [],
    }


@pytest.mark.parametrize("name", ["-web", "a%20b", "web%21", "x" * 64, "%C3%A9t%C3%A9"])
async def test_an_invalid_service_name_is_400(api: Api, name: str) -> None:
    status, doc, _ = await api.get(f"/v1/services/{name}")
    assert status == 400 and "service" in doc["error"]


async def test_services_are_blocking_queries_too(api: Api) -> None:
    api.join(1, services=("web",))
    listing = asyncio.create_task(api.get("/v1/services?index=1"))
    one = asyncio.create_task(api.get(f"/v1/services/web?index=1&epoch={EPOCH}"))
    await api.until_parked(2)
    api.join(2, services=("web",), tags=("new",))
    _, doc, _ = await listing
    assert doc["version"] == 2 and doc["services"]["web"] == {
        "members": 2,
        "instances": 0,
        "passing": 0,
        "tags": ["new"],
    }
    _, doc, _ = await one
    assert doc["version"] == 2 and ids(doc) == ["id-1", "id-2"]


# -- /v1/events -----------------------------------------------------------------------


class Stream:
    """Reads server-sent events from a response: whole events, comments kept apart."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp
        self._buffer = b""

    async def next(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The next event or comment: {"event", "id", "data"} or {"comment"}."""
        async with asyncio.timeout(timeout):
            while b"\n\n" not in self._buffer:
                data = await self.resp.content.readany()
                if not data:
                    raise EOFError("the stream ended")
                self._buffer += data
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        lines = block.decode().split("\n")
        if all(line.startswith(":") for line in lines):
            return {"comment": "\n".join(lines)}
        fields = dict(line.split(": ", 1) for line in lines)
        assert set(fields) == {"event", "id", "data"}, fields
        return {**fields, "data": orjson.loads(fields["data"])}

    async def event(self) -> dict[str, Any]:
        """The next event, comments skipped."""
        while "comment" in (event := await self.next()):
            pass
        return event


async def open_stream(api: Api, last_event_id: str | None = None) -> Stream:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with asyncio.timeout(DEADLINE):
        resp = await api.client.get("/v1/events", headers=headers)
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    assert resp.headers["X-Mesh-Epoch"] == EPOCH
    return Stream(resp)


async def test_a_stream_starts_with_a_snapshot_then_sends_each_change(api: Api) -> None:
    api.join(1, services=("web",))
    api.join(2)
    _, members, _ = await api.get("/v1/members")
    stream = await open_stream(api)
    snapshot = await stream.event()
    assert snapshot == {"event": "snapshot", "id": f"{EPOCH}:2", "data": members}

    joined = api.join(3, tags=("new",))
    event = await stream.event()
    assert event["event"] == "member_joined" and event["id"] == f"{EPOCH}:3"
    assert set(event["data"]) == {"epoch", "version", "member"}
    assert event["data"]["epoch"] == EPOCH and event["data"]["version"] == 3
    assert event["data"]["member"] == api.registry.get("id-3").document()  # type: ignore[union-attr]
    assert event["data"]["member"]["tags"] == list(joined.tags)

    updated = api.update(1, services=("web", "db"), draining=True)
    event = await stream.event()
    assert (event["event"], event["id"]) == ("member_joined", f"{EPOCH}:4")
    assert event["data"]["member"]["incarnation"] == updated.incarnation == 2
    assert event["data"]["member"]["draining"] is True
    assert event["data"]["member"]["services"] == ["web", "db"]

    api.leave(2, reason="timeout")
    event = await stream.event()
    assert (event["event"], event["id"]) == ("member_left", f"{EPOCH}:5")
    assert event["data"]["reason"] == "timeout"
    assert event["data"]["member"]["id"] == "id-2"
    assert set(event["data"]["member"]) == DOCUMENT_FIELDS
    assert api.watchers.streams == 1


async def test_changes_made_together_arrive_each_in_version_order(api: Api) -> None:
    stream = await open_stream(api)
    assert (await stream.event())["id"] == f"{EPOCH}:0"
    for i in range(1, 30):  # no await between them: the stream wakes once for all
        api.registry.register(member(i), now=float(i))
        if i % 4 == 0:
            api.registry.unregister(member(i), "closed")
    api.watch.notify()
    expected = api.registry.version
    versions = []
    while not versions or versions[-1] < expected:
        event = await stream.event()
        assert event["event"] in ("member_joined", "member_left")
        versions.append(event["data"]["version"])
    assert versions == list(range(1, expected + 1))


async def test_each_event_is_encoded_once_for_all_streams(api: Api) -> None:
    streams = [await open_stream(api) for _ in range(3)]
    for stream in streams:
        await stream.event()
    api.join(1)
    for stream in streams:
        assert (await stream.event())["id"] == f"{EPOCH}:1"
    assert api.watchers.streams == 3
    # the feed keeps the encoded event by version: every stream wrote the same bytes
    feed, event = watchers_feed(api), api.registry.history[-1]
    assert feed.event(event) is feed.event(event)
    assert feed.snapshot()[0] is feed.snapshot()[0]


def watchers_feed(api: Api) -> Any:
    """The app's EventFeed (the handler of /v1/events is its bound method)."""
    for route in api.client.app.router.routes():
        if route.resource is not None and route.resource.canonical == "/v1/events":
            return route.handler.__self__  # type: ignore[attr-defined]
    raise AssertionError("no /v1/events route")


async def test_resume_within_the_history_sends_only_what_was_missed(api: Api) -> None:
    api.join(1)
    stream = await open_stream(api)
    snapshot = await stream.event()
    last_id = snapshot["id"]
    stream.resp.close()
    api.join(2)
    api.leave(1, reason="closed")
    api.join(3)
    stream = await open_stream(api, last_event_id=last_id)
    events = [await stream.event() for _ in range(3)]
    assert [e["event"] for e in events] == ["member_joined", "member_left", "member_joined"]
    assert [e["id"] for e in events] == [f"{EPOCH}:{v}" for v in (2, 3, 4)]
    assert events[1]["data"]["reason"] == "closed"
    api.join(4)  # and it goes on from there
    assert (await stream.event())["id"] == f"{EPOCH}:5"


async def test_resume_with_nothing_missed_sends_nothing_until_the_next_change(api: Api) -> None:
    api.join(1)
    api.join(2)
    stream = await open_stream(api, last_event_id=f"{EPOCH}:2")
    api.join(3)
    # the first thing on the stream is the new event: no snapshot came before it
    event = await stream.next()
    assert (event["event"], event["id"]) == ("member_joined", f"{EPOCH}:3")


@pytest.mark.parametrize(
    "last_id",
    [
        "another-epoch:2",
        f"{EPOCH}:9",  # from the future
        f"{EPOCH}:x",
        f"{EPOCH}",
        "",
        "garbage",
        f"{EPOCH}:-1",
    ],
)
async def test_resume_from_another_run_or_a_bad_id_gets_a_snapshot(api: Api, last_id: str) -> None:
    api.join(1)
    api.join(2)
    stream = await open_stream(api, last_event_id=last_id)
    event = await stream.next()
    assert (event["event"], event["id"]) == ("snapshot", f"{EPOCH}:2")
    assert ids(event["data"]) == ["id-1", "id-2"]


async def test_resume_from_beyond_the_history_gets_a_snapshot(api: Api) -> None:
    api.join(0)
    for i in range(1, HISTORY + 2):  # 1,025 events after version 1
        api.registry.register(member(i), now=float(i))
    api.watch.notify()
    stream = await open_stream(api, last_event_id=f"{EPOCH}:1")
    event = await stream.next()
    assert (event["event"], event["id"]) == ("snapshot", f"{EPOCH}:{HISTORY + 2}")
    assert len(event["data"]["members"]) == HISTORY + 2
    # exactly at the edge of the history: still a resume
    stream = await open_stream(api, last_event_id=f"{EPOCH}:2")
    event = await stream.next()
    assert (event["event"], event["id"]) == ("member_joined", f"{EPOCH}:3")


async def test_a_stream_that_falls_out_of_the_history_gets_a_new_snapshot(api: Api) -> None:
    stream = await open_stream(api)
    assert (await stream.event())["id"] == f"{EPOCH}:0"
    for i in range(1, HISTORY + 11):  # no await: the stream is 1,034 events behind at its wake
        api.registry.register(member(i), now=float(i))
    api.watch.notify()
    event = await stream.event()
    assert (event["event"], event["id"]) == ("snapshot", f"{EPOCH}:{HISTORY + 10}")
    assert len(event["data"]["members"]) == HISTORY + 10
    api.join(5000)  # and deltas again from there
    event = await stream.event()
    assert (event["event"], event["id"]) == ("member_joined", f"{EPOCH}:{HISTORY + 11}")


async def test_an_idle_stream_sends_a_keepalive_comment() -> None:
    async with serve(keepalive=0.05) as api:
        stream = await open_stream(api)
        assert (await stream.next())["event"] == "snapshot"
        assert await stream.next() == {"comment": ": keepalive"}
        assert await stream.next() == {"comment": ": keepalive"}
        api.join(1)
        assert (await stream.event())["id"] == f"{EPOCH}:1"


async def test_a_client_that_goes_away_ends_its_stream_quietly(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    stream = await open_stream(api)
    await stream.event()
    assert api.watchers.streams == 1
    stream.resp.close()
    api.join(1)
    await until(lambda: api.watchers.streams == 0)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_client_that_stops_reading_is_cut_after_the_write_timeout() -> None:
    async with serve(write_timeout=0.5) as api:
        server = api.client.server
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (server.host, server.port))
        await loop.sock_sendall(sock, b"GET /v1/events HTTP/1.1\r\nHost: test\r\n\r\n")
        await until(lambda: api.watchers.streams == 1)
        # ~8 KiB records until the stream cannot write: it waits, it does not queue
        meta = tuple((f"k{j}", "v" * 500) for j in range(15))
        i = 0
        async with asyncio.timeout(DEADLINE):
            while api.watchers.streams:
                api.join(i, meta=meta)
                api.leave(i, reason="closed")
                i += 1
                await asyncio.sleep(0)  # let the stream write
        # it was cut: the socket is reset or closed once what it holds is read
        with pytest.raises((ConnectionResetError, EOFError)):
            async with asyncio.timeout(DEADLINE):
                while await loop.sock_recv(sock, 65536):
                    pass
                raise EOFError
        sock.close()
        assert i > 10  # the client's buffers were full before the cut


async def test_shutdown_ends_streams(api: Api) -> None:
    stream = await open_stream(api)
    await stream.event()
    await api.watchers.shutdown(api.client.app)
    with pytest.raises(EOFError):
        await stream.next()
    assert api.watchers.streams == 0
