"""LoopLag: only our own stalls since a given time stretch a liveness timeout."""

from __future__ import annotations

import pytest

from shared.looplag import LoopLag


def ticking(*times: float) -> LoopLag:
    lag = LoopLag(interval=0.1)
    for now in times:
        lag.tick(now)
    return lag


def test_a_loop_on_time_has_no_stall() -> None:
    lag = ticking(100.0, 100.1, 100.2, 100.301)  # a millisecond late is noise
    assert lag.since(99.0, 100.35) == 0.0


def test_a_stall_counts_only_for_what_overlaps_the_wait() -> None:
    lag = ticking(100.0, 105.1)  # due at 100.1, woke 5 s late: a freeze ending at 105.1
    assert lag.since(90.0, 105.2) == pytest.approx(5.0)  # the whole stall since 90
    assert lag.since(103.1, 105.2) == pytest.approx(2.0)  # its last 2 s
    for i in range(1, 40):  # on time again after the thaw
        lag.tick(105.1 + i * 0.1)
    # a frame that came in after the thaw: the old stall excuses nothing more
    assert lag.since(105.15, 109.0) == 0.0


def test_stalls_add_up() -> None:
    lag = ticking(100.0, 101.1, 101.2, 103.2)  # 1 s late, then 1.9 s late
    assert lag.since(99.0, 103.3) == pytest.approx(2.9)


def test_a_stall_in_progress_counts_so_far() -> None:
    lag = ticking(100.0)  # due at 100.1 and not awake yet at 103
    assert lag.since(99.0, 103.0) == pytest.approx(2.9)
    assert lag.since(102.0, 103.0) == pytest.approx(1.0)
    assert lag.since(99.0, 100.12) == 0.0  # late by less than a stall
