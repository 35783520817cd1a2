"""The API's documents as rich tables. Pure: documents in, renderables out (`now` passed in)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

SHORT_ID = 8  # characters of an id shown in tables (the JSON has them whole)

STATE_STYLES = {
    "connected": "green",
    "self": "green",
    "connecting": "yellow",
    "retrying": "red",
    "disconnected": "red",
}


def parse_time(text: Any) -> float | None:
    """An RFC 3339 time (`2026-12-01T16:02:11.253Z`) as epoch seconds; None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def age(since: Any, now: float) -> str:
    """How long ago an RFC 3339 time was, in the two largest units: 42s, 3m05s, 2h07m, 4d03h."""
    start = parse_time(since)
    if start is None:
        return "?"
    seconds = max(0, int(now - start))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def short(member_id: Any) -> str:
    return str(member_id)[:SHORT_ID] if member_id is not None else ""


def _listing(values: Any) -> str:
    return ", ".join(map(str, values)) if isinstance(values, list) else ""


def _state(state: Any) -> Text:
    return Text(str(state), style=STATE_STYLES.get(str(state), ""))


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def titled(title: str, table: Table) -> RenderableType:
    """A heading line over a table (a table's own title wraps at the table's width)."""
    return Group(Text(title, style="bold"), table)


def members_table(members: Iterable[Mapping[str, Any]], now: float) -> Table:
    """Distributor member records: name, id, address, http, services, tags, draining, age."""
    table = Table()
    for column in ("name", "id", "address", "http", "services", "tags", "draining", "age"):
        table.add_column(column, no_wrap=column in ("id", "address", "http", "age"))
    for m in members:
        draining = Text("draining", style="yellow") if m.get("draining") else Text("")
        since = m.get("connected_since")
        table.add_row(
            str(m.get("name", "")),
            short(m.get("id")),
            str(m.get("address", "")),
            str(m.get("http", "") or ""),
            _listing(m.get("services")),
            _listing(m.get("tags")),
            draining,
            age(since, now) if since else "",
        )
    return table


def members_view(doc: Mapping[str, Any], now: float, what: str = "members") -> RenderableType:
    members = doc["members"]
    where = f"epoch {doc.get('epoch')} · version {doc.get('version')}"
    if not members:
        return Text(f"no {what} · {where}")
    return titled(f"{plural(len(members), what[:-1])} · {where}", members_table(members, now))


def services_view(doc: Mapping[str, Any]) -> RenderableType:
    """/v1/services: name, members (draining ones counted), instances, passing ones, tags."""
    services = doc["services"]
    where = f"epoch {doc.get('epoch')} · version {doc.get('version')}"
    if not services:
        return Text(f"no services · {where}")
    table = Table()
    table.add_column("name")
    for column in ("members", "instances", "passing"):
        table.add_column(column, justify="right")
    table.add_column("tags")
    for name, info in services.items():
        table.add_row(
            Text(str(name)),
            Text(str(info.get("members", ""))),
            Text(str(info.get("instances", ""))),
            Text(str(info.get("passing", ""))),
            Text(_listing(info.get("tags"))),
        )
    return titled(f"{plural(len(services), 'service')} · {where}", table)


HEALTH_STYLES = {"passing": "green", "warning": "yellow", "critical": "red"}


def instances_table(instances: Iterable[Mapping[str, Any]]) -> Table:
    """Instances of a service (outside any node, in any language): id, address, health, tags,
    and the node that registered and checks it."""
    table = Table()
    for column in ("id", "address", "health", "tags", "node", "node id"):
        table.add_column(column, no_wrap=column in ("address", "node id"))
    for i in instances:
        health = str(i.get("health", ""))
        table.add_row(
            Text(str(i.get("id", ""))),
            Text(f"{i.get('address', '')}:{i.get('port', '')}"),
            Text(health, style=HEALTH_STYLES.get(health, "")),
            Text(_listing(i.get("tags"))),
            Text(str(i.get("node", ""))),
            Text(short(i.get("member"))),
        )
    return table


def service_view(doc: Mapping[str, Any], now: float) -> RenderableType:
    """/v1/services/<name>: its providers, as the members table, then its instances."""
    members, instances = doc["members"], doc.get("instances") or []
    where = f"epoch {doc.get('epoch')} · version {doc.get('version')}"
    service = doc.get("service")
    if not members and not instances:
        return Text(f"no member provides {service} and it has no instances · {where}")
    parts: list[RenderableType] = []
    if members:
        title = f"service {service}: {plural(len(members), 'provider')} · {where}"
        parts.append(titled(title, members_table(members, now)))
    if instances:
        passing = sum(1 for i in instances if i.get("health") == "passing")
        title = f"service {service}: {plural(len(instances), 'instance')}, {passing} passing"
        parts.append(titled(title if members else f"{title} · {where}", instances_table(instances)))
    return Group(*parts)


def links_view(doc: Mapping[str, Any], now: float) -> RenderableType:
    """/v1/links: the peer links nodes report broken."""
    broken = doc["broken"]
    if not broken:
        return Text("no broken links", style="green")
    table = Table()
    for column in ("from", "to", "state", "since", "for"):
        table.add_column(column, no_wrap=True)
    for link in broken:
        table.add_row(
            _who(link.get("from_name"), link.get("from")),
            _who(link.get("to_name"), link.get("to")),
            _state(link.get("state", "")),
            str(link.get("since", "")),
            age(link.get("since"), now),
        )
    return titled(plural(len(broken), "broken link"), table)


def _who(name: Any, member_id: Any) -> str:
    if name:
        return f"{name} ({short(member_id)})"
    return str(member_id or "?")


def status_view(doc: Mapping[str, Any], now: float) -> RenderableType:
    """/v1/status: who the node is, its distributors, its peers (with the peers' services)."""
    ident = Text.assemble(
        ("node ", "bold"),
        (str(doc["name"]), "bold"),
        f" · id {doc['id']} · address {doc.get('address')} · incarnation {doc.get('incarnation')}",
    )

    distributors = Table()
    for column in ("address", "state", "for", "attempts", "last error"):
        distributors.add_column(column, no_wrap=column != "last error")
    for d in doc["distributors"]:
        distributors.add_row(
            str(d.get("address", "")),
            _state(d.get("state", "")),
            age(d.get("since"), now),
            str(d.get("attempts", "")),
            str(d.get("last_error") or ""),
        )

    records = {m.get("id"): m for m in doc.get("members", []) if isinstance(m, Mapping)}
    peers = Table()
    for column in ("name", "id", "address", "state", "for", "attempts", "services", "last error"):
        peers.add_column(column, no_wrap=column in ("id", "address", "for"))
    for p in doc["peers"]:
        record = records.get(p.get("id"), {})
        peers.add_row(
            str(p.get("name", "")),
            short(p.get("id")),
            str(p.get("address", "")),
            _state(p.get("state", "")),
            age(p.get("since"), now),
            str(p.get("attempts", "")),
            _listing(record.get("services")),
            str(p.get("last_error") or ""),
        )
    parts: list[RenderableType] = [ident]
    count = len(doc["distributors"])
    if count:
        parts.append(titled(plural(count, "distributor"), distributors))
    else:
        parts.append(Text("no distributor configured"))
    count = len(doc["peers"])
    parts.append(titled(plural(count, "peer"), peers) if count else Text("no peers"))
    return Group(*parts)
