"""Broken peer links: what a node reports (node/linkreport.py) and what the distributor
shows of them (registry, /v1/links), and Prometheus discovery's labels."""

from __future__ import annotations

from distributor.discovery import links_document, target_labels, targets_document
from distributor.registry import Registry
from node.linkreport import LinkReporter
from shared.wire import BrokenLink, Member

TIMEOUT = 3.0


def test_a_link_is_broken_only_after_the_heartbeat_timeout() -> None:
    reporter = LinkReporter(TIMEOUT)
    links = [("a", "connected", 0.0), ("b", "retrying", 98.0), ("c", "connecting", 90.0)]
    assert reporter.broken(links, now=100.0) == (BrokenLink("c", "connecting", 90.0),)
    assert [link.to for link in reporter.broken(links, now=101.5)] == ["b", "c"]


def test_reports_go_out_when_the_set_changes_at_most_once_per_spacing() -> None:
    reporter = LinkReporter(TIMEOUT, spacing=1.0)
    cut = (BrokenLink("b", "retrying", 10.0),)
    assert not reporter.due((), 0.0)  # nothing broken, nothing reported yet: no news
    assert reporter.due(cut, 20.0)
    assert not reporter.due(cut, 25.0)  # the same set again
    assert not reporter.due((), 20.5)  # healed, but within the spacing
    assert reporter.due((), 21.0)  # healed: the empty set is news
    assert reporter.last == ()


def member(i: int, **fields: object) -> Member:
    return Member(f"id-{i}", f"n{i}", f"10.0.0.{i}:9010", 1, http=f"10.0.0.{i}:9110", **fields)


def test_the_distributor_shows_links_between_registered_members_only() -> None:
    registry = Registry("e")
    for i in (1, 2, 3):
        registry.register(member(i), 0.0)
    broken = (BrokenLink("id-2", "retrying", 1764604800.0), BrokenLink("id-9", "retrying", 0.0))
    registry.report_links("id-1", broken)
    registry.report_links("id-9", broken)  # not registered: ignored
    assert links_document(registry) == {
        "broken": [
            {
                "from": "id-1",
                "to": "id-2",
                "from_name": "n1",
                "to_name": "n2",
                "state": "retrying",
                "since": "2025-12-01T16:00:00.000Z",
            }
        ]
    }
    registry.unregister(member(2), "closed")  # the far end left: no longer a partition
    assert links_document(registry) == {"broken": []}
    registry.register(member(2), 0.0)
    assert len(links_document(registry)["broken"]) == 1
    registry.unregister(member(1), "closed")  # the reporter left: its report goes with it
    registry.register(member(1), 0.0)
    assert links_document(registry) == {"broken": []}
    registry.report_links("id-3", broken[:1])
    registry.report_links("id-3", ())  # healed
    assert links_document(registry) == {"broken": []}


def test_prometheus_labels_are_valid_label_names() -> None:
    record = member(
        1,
        services=("goods", "stock"),
        tags=("v2",),
        meta=(("zone-a", "x"), ("zone_a", "clash"), ("owner.team", "shop")),
        draining=True,
    )
    assert target_labels(record) == {
        "mesh_id": "id-1",
        "mesh_name": "n1",
        "mesh_services": ",goods,stock,",
        "mesh_tags": ",v2,",
        "mesh_draining": "true",
        "mesh_meta_zone_a": "x",  # zone_a, the later key, is dropped
        "mesh_meta_owner_team": "shop",
    }
    assert target_labels(member(2))["mesh_services"] == ",,"


def test_prometheus_targets_skip_members_without_http_and_filter_by_service() -> None:
    registry = Registry("e")
    registry.register(member(1, services=("goods",)), 0.0)
    registry.register(member(2), 0.0)
    registry.register(Member("id-old", "old", "10.0.0.9:9010", 1), 0.0)  # a version-1 node
    groups = targets_document(registry.entries())
    assert [g["targets"] for g in groups] == [["10.0.0.1:9110"], ["10.0.0.2:9110"]]
    assert [g["labels"]["mesh_id"] for g in targets_document(registry.entries(), "goods")] == [
        "id-1"
    ]
