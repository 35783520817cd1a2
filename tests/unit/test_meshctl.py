"""meshctl's pure parts: arguments, URLs, ages, the event reader, the watch state, views."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from meshctl import render
from meshctl.__main__ import Context, build_parser
from meshctl.client import Event, Usage, base_url, read_events
from meshctl.watch import WatchState
from shared import timefmt

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def rfc3339(seconds_ago: float) -> str:
    return timefmt.rfc3339(NOW - seconds_ago)


def record(member_id: str, name: str, **extra: object) -> dict[str, object]:
    return {
        "id": member_id,
        "name": name,
        "address": "127.0.0.1:9011",
        "incarnation": 1,
        "http": "127.0.0.1:9111",
        "services": [],
        "tags": [],
        "meta": {},
        "draining": False,
        **extra,
    }


def text_of(renderable: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# -- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--url", "http://d:1", "--token", "t", "members"],
        ["members", "--json", "--url", "http://d:1", "--token", "t"],
        ["--url", "http://d:1", "members", "--json", "--token", "t"],
    ],
)
def test_global_options_before_or_after_the_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_URL", raising=False)
    ctx = Context(build_parser().parse_args(argv))
    assert (ctx.json, ctx.url, ctx.token) == (True, "http://d:1", "t")


def test_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MESH_URL", "MESH_NODE_URL", "MESH_HTTP_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    ctx = Context(build_parser().parse_args(["status"]))
    assert (ctx.url, ctx.node, ctx.token, ctx.json) == (
        "http://127.0.0.1:9100",
        "http://127.0.0.1:9110",
        None,
        False,
    )
    monkeypatch.setenv("MESH_URL", "http://e:2")
    monkeypatch.setenv("MESH_NODE_URL", "http://n:3")
    monkeypatch.setenv("MESH_HTTP_TOKEN", "env-token")
    ctx = Context(build_parser().parse_args(["members"]))
    assert (ctx.url, ctx.node, ctx.token) == ("http://e:2", "http://n:3", "env-token")
    # the flag wins
    ctx = Context(build_parser().parse_args(["members", "--url", "http://f:4", "--token", "x"]))
    assert (ctx.url, ctx.token) == ("http://f:4", "x")


def test_request_arguments() -> None:
    args = build_parser().parse_args(["request", "--to", "n1", "echo", "--body", "[1]"])
    assert (args.to, args.service, args.method, args.body) == ("n1", None, "echo", "[1]")
    args = build_parser().parse_args(["request", "--service", "goods", "list", "--timeout", "2"])
    assert (args.service, args.timeout) == ("goods", 2.0)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["members", "--bogus"],
        ["request", "ping"],
        ["request", "--to", "a", "--service", "b", "ping"],
        ["request", "--to", "a", "ping", "--timeout", "301"],
        ["request", "--to", "a", "ping", "--timeout", "soon"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_base_url() -> None:
    assert base_url("http://127.0.0.1:9100/", "--url") == "http://127.0.0.1:9100"
    assert base_url("127.0.0.1:9100", "--url") == "http://127.0.0.1:9100"
    assert base_url("https://[::1]:9100", "--url") == "https://[::1]:9100"
    for bad in ("ftp://x", "http://", "http://h:99999", "http://h:port"):
        with pytest.raises(Usage):
            base_url(bad, "--url")


# -- ages and views ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ago", "shown"),
    [(0, "0s"), (42.9, "42s"), (185, "3m05s"), (7620, "2h07m"), (4 * 86400 + 3 * 3600, "4d03h")],
)
def test_age(ago: float, shown: str) -> None:
    assert render.age(rfc3339(ago), NOW) == shown


def test_age_of_nonsense_and_of_the_future() -> None:
    assert render.age("yesterday", NOW) == "?"
    assert render.age(None, NOW) == "?"
    assert render.age(rfc3339(-30), NOW) == "0s"


def test_members_view() -> None:
    doc = {
        "epoch": "e1",
        "version": 7,
        "members": [
            record("aaaaaaaa1111", "shop1", services=["goods", "carts"], tags=["v2"])
            | {"draining": True, "connected_since": rfc3339(65)},
            record("bbbbbbbb2222", "node2") | {"connected_since": rfc3339(5)},
        ],
    }
    text = text_of(render.members_view(doc, NOW))
    assert "2 members · epoch e1 · version 7" in text
    row = next(line for line in text.splitlines() if "shop1" in line)
    for cell in ("aaaaaaaa", "goods, carts", "v2", "draining", "1m05s", "127.0.0.1:9111"):
        assert cell in row
    assert "aaaaaaaa1111" not in row  # short ids
    assert "no members" in text_of(render.members_view({**doc, "members": []}, NOW))


def test_services_and_links_views() -> None:
    doc = {"epoch": "e", "version": 1, "services": {"goods": {"members": 3, "tags": ["v2"]}}}
    assert "1 service ·" in text_of(render.services_view(doc))
    links = {
        "broken": [
            {
                "from": "aaaaaaaa1111",
                "to": "bbbbbbbb2222",
                "from_name": "a",
                "to_name": "b",
                "state": "retrying",
                "since": rfc3339(10),
            }
        ]
    }
    row = next(
        line for line in text_of(render.links_view(links, NOW)).splitlines() if "a (" in line
    )
    assert "b (bbbbbbbb)" in row and "retrying" in row and "10s" in row
    assert "no broken links" in text_of(render.links_view({"broken": []}, NOW))


def test_status_view() -> None:
    doc = {
        "id": "cccc",
        "name": "me",
        "address": "127.0.0.1:9010",
        "incarnation": 2,
        "distributors": [
            {
                "address": "d:9000",
                "state": "disconnected",
                "since": rfc3339(3),
                "attempts": 4,
                "last_error": "connection refused",
            }
        ],
        "members": [record("aaaaaaaa1111", "shop1", services=["goods"])],
        "peers": [
            {
                "id": "aaaaaaaa1111",
                "name": "shop1",
                "address": "127.0.0.1:9011",
                "state": "connected",
                "since": rfc3339(100),
                "attempts": 0,
                "last_error": None,
            }
        ],
    }
    text = text_of(render.status_view(doc, NOW))
    assert text.splitlines()[0].startswith("node me · id cccc")
    assert "connection refused" in text and "disconnected" in text
    peer = next(line for line in text.splitlines() if "shop1" in line)
    assert "goods" in peer and "1m40s" in peer


# -- the event stream ------------------------------------------------------------------


def test_read_events() -> None:
    lines = [
        b": keepalive\n",
        b"\n",
        b"event: snapshot\n",
        b"id: e:1\n",
        b'data: {"a":\n',
        b"data: 1}\n",
        b"\n",
        b"event: member_left\r\n",
        b"data:{}\r\n",
        b"\r\n",
        b"event: member_joined\n",
        b"data: cut off before its blank line\n",
    ]
    assert list(read_events(iter(lines))) == [
        Event("snapshot", "e:1", '{"a":\n1}'),
        Event("member_left", "e:1", "{}"),  # the last id stays until another is given
    ]


def snapshot(epoch: str, version: int, *members: dict[str, object]) -> Event:
    data = {"epoch": epoch, "version": version, "members": list(members)}
    return Event("snapshot", f"{epoch}:{version}", json.dumps(data))


def change(kind: str, epoch: str, version: int, member: dict[str, object], **extra: str) -> Event:
    data = {"epoch": epoch, "version": version, "member": member, **extra}
    return Event(kind, f"{epoch}:{version}", json.dumps(data))


def test_watch_state() -> None:
    state = WatchState()
    a, b = record("aaaaaaaa1", "a"), record("bbbbbbbb2", "b", services=["goods"])
    assert state.apply(snapshot("e1", 1, a)) == ["snapshot: 1 member, epoch e1, version 1"]
    assert (state.epoch, state.version, state.last_id) == ("e1", 1, "e1:1")

    assert state.apply(change("member_joined", "e1", 2, b)) == [
        "+ b (bbbbbbbb) joined: services goods"
    ]
    drained = {**b, "incarnation": 2, "draining": True}
    assert state.apply(change("member_joined", "e1", 3, drained)) == [
        "~ b (bbbbbbbb) updated: services goods; draining"
    ]
    assert list(state.members) == ["aaaaaaaa1", "bbbbbbbb2"]  # an update keeps its place
    assert state.members["bbbbbbbb2"]["draining"] is True
    assert state.apply(change("member_left", "e1", 4, a, reason="timeout")) == [
        "- a (aaaaaaaa) left (timeout)"
    ]
    assert list(state.members) == ["bbbbbbbb2"]
    assert state.last_id == "e1:4"

    # a restarted distributor: a new epoch's snapshot replaces the table, and says so
    changes = state.apply(snapshot("e2", 1, a))
    assert changes[0] == "new epoch e2 (was e1): the distributor restarted"
    assert list(state.members) == ["aaaaaaaa1"] and state.last_id == "e2:1"

    # an event type from a newer distributor is skipped
    assert state.apply(Event("member_renamed", "e2:2", "{}")) == []


@pytest.mark.parametrize(
    "event",
    [
        Event("snapshot", None, "<html>"),
        Event("snapshot", None, "[]"),
        Event("snapshot", None, '{"members": [{"name": "no id"}]}'),
        Event("member_joined", None, '{"member": "x"}'),
    ],
)
def test_watch_state_refuses_what_the_api_does_not_send(event: Event) -> None:
    with pytest.raises(ValueError):
        WatchState().apply(event)


def test_a_service_with_instances_lists_them_with_their_health() -> None:
    summary = {
        "epoch": "e",
        "version": 3,
        "services": {"hello": {"members": 0, "instances": 3, "passing": 2, "tags": ["v1"]}},
    }
    row = next(
        line for line in text_of(render.services_view(summary)).splitlines() if "hello" in line
    )
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["hello", "0", "3", "2", "v1"]
    instance = {"service": "hello", "port": 3000, "tags": ["v1"], "meta": {}}
    doc = {
        "epoch": "e",
        "version": 3,
        "service": "hello",
        "members": [],
        "instances": [
            {**instance, "id": "hello-1", "address": "10.0.0.5", "health": "passing"}
            | {"member": "aaaaaaaa1111", "node": "agent-1"},
            {**instance, "id": "hello-2", "address": "10.0.0.6", "health": "critical"}
            | {"member": "bbbbbbbb2222", "node": "agent-2"},
        ],
    }
    text = text_of(render.service_view(doc, NOW))
    assert "service hello: 2 instances, 1 passing · epoch e · version 3" in text
    row = next(line for line in text.splitlines() if "hello-2" in line)
    for cell in ("10.0.0.6:3000", "critical", "agent-2", "bbbbbbbb"):
        assert cell in row
    assert "no member provides" in text_of(render.service_view({**doc, "instances": []}, NOW))
