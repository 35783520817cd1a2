"""bench/report.py's status of a row and bench/rawclient.py's sampling (issue 23): pure
functions of given figures, no timing measured."""

from __future__ import annotations

import math

from bench.rawclient import Sampling
from bench.report import Row
from bench.storm import SAMPLE, sample


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
