"""shared/backoff.py: full jitter under min(cap, base * 2**attempt)."""

from __future__ import annotations

import random

import pytest

from shared.backoff import Backoff


def test_first_delays_stay_under_their_ceilings() -> None:
    backoff = Backoff(0.1, 5.0, random.Random(1))
    for attempt in range(200):
        ceiling = min(5.0, 0.1 * 2**attempt)
        assert backoff.ceiling() == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
        assert backoff.attempt == attempt + 1


def test_delays_are_jittered_over_the_whole_range() -> None:
    # full jitter: with the cap reached, delays spread over [0, cap], not near it
    backoff = Backoff(1.0, 8.0, random.Random(7))
    backoff.attempt = 10
    delays = []
    for _ in range(500):
        delays.append(backoff.next_delay())
    assert all(0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0
    assert max(delays) > 7.0
    assert len(set(delays)) > 400


def test_cap_reached_and_held() -> None:
    backoff = Backoff(0.1, 5.0, random.Random(2))
    ceilings = []
    for _ in range(100):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    # 0.1 * 2**6 = 6.4 > 5: the cap from the 7th attempt on, and never above it
    assert ceilings[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert all(c == 5.0 for c in ceilings[6:])
    assert max(ceilings) == 5.0


def test_reset_starts_over() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(3))
    for _ in range(10):
        backoff.next_delay()
    assert backoff.ceiling() == 30.0
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.ceiling() == 0.5
    assert 0 <= backoff.next_delay() <= 0.5
    assert backoff.ceiling() == 1.0


@pytest.mark.parametrize("attempt", [1000, 10**6, 10**18, 2**200])
def test_huge_attempt_counts_do_not_overflow(attempt: int) -> None:
    backoff = Backoff(0.1, 5.0, random.Random(4))
    backoff.attempt = attempt
    assert backoff.ceiling() == 5.0
    for _ in range(10):
        assert 0 <= backoff.next_delay() <= 5.0


def test_same_seed_same_delays() -> None:
    first = Backoff(0.1, 5.0, random.Random(42))
    second = Backoff(0.1, 5.0, random.Random(42))
    assert [first.next_delay() for _ in range(20)] == [second.next_delay() for _ in range(20)]


@pytest.mark.parametrize("base, cap", [(0, 5), (-1, 5), (0.1, 0), (0.1, -2)])
def test_non_positive_settings_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap)
