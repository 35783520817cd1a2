"""bench/report.py's status of a row and bench/rawclient.py's sampling and record count
(issue 23): pure functions of given figures and frames, no timing measured."""

from __future__ import annotations

import math

from bench.rawclient import RawClient, Sampling, hello_frame, records_digest
from bench.report import Row
from bench.storm import SAMPLE, sample
from distributor.registry import Registry
from shared.snapshot import deltas_frames
from shared.wire import decode, delta_event


def test_a_row_is_met_only_when_its_whole_spread_is_within_the_goal():
    assert Row("r", "ms", [1.0], "<= 1.2x", ratios=[1.0, 1.1, 1.2]).status() == "met"
    assert Row("r", "ms", [1.0], "<= 1.2x", ratios=[1.1, 1.3]).status() == "not settled"
    assert Row("r", "ms", [1.0], "<= 1.2x", ratios=[1.3, 1.4]).status() == "not met"
    # a goal on the figures themselves, and a run that did not complete
    assert Row("s", "s", [0.1, 0.4], "< 0.5 s").status() == "met"
    assert Row("s", "s", [0.1, math.inf], "< 0.5 s").status() == "not settled"
    # a ratio goal written without an "x"
    assert Row("rps", "rps", [9.0], ">= 0.8", ratios=[0.7, 0.9], on_ratio=True).status() == (
        "not settled"
    )
    assert Row("none", "MB", [40.0], "").status() == "-"


def test_the_sample_holds_the_first_and_the_last_client_and_enough_of_them():
    assert sample(50) == set(range(50))
    picked = sample(10_000)
    assert {0, 9_999} <= picked and len(picked) == SAMPLE


def test_sampling_digests_the_smallest_snapshot_yet_and_a_whole_list():
    sampling = Sampling(expect=100)
    assert sampling.wants(3)  # the first seen
    assert not sampling.wants(10)
    assert sampling.wants(2)  # smaller than any before: an earlier join
    assert sampling.wants(100)  # every member: a last join
    assert not sampling.wants(99)


def test_a_client_counts_and_digests_what_the_distributor_sends():
    """A snapshot, then a batch of joins, then one with a departure, all as the distributor
    frames them: the count follows the list, and the digest is the registry's own."""
    registry = Registry("epoch")
    members = [decode(hello_frame(i)[1][4:]).member for i in range(12)]
    for member in members[:5]:
        registry.register(member, 0.0)
    client = RawClient(99, expect=0)
    client.data_received(b"".join(registry.compact_snapshot_frames(1 << 20)))
    assert client.members == 5
    joins = [registry.register(member, 0.0)[0] for member in members[5:]]
    batch = deltas_frames(joins[0].version, [delta_event(d) for d in joins], 1 << 20)
    client.data_received(b"".join(batch))
    assert client.members == 12
    left = registry.unregister(members[3], "closed")
    assert left is not None
    rejoined = registry.register(members[3], 0.0)[0]
    events = [delta_event(left), delta_event(rejoined)]
    client.data_received(b"".join(deltas_frames(left.version, events, 1 << 20)))
    assert client.members == 12
    # split across reads, one byte at a time: the same count
    one_by_one = RawClient(98, expect=0)
    for byte in b"".join(registry.compact_snapshot_frames(1 << 20)):
        one_by_one.data_received(bytes([byte]))
    assert one_by_one.members == 12
    expected = records_digest(entry.document() for entry in registry.entries())
    assert one_by_one.digest.hexdigest() == expected
