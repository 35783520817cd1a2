"""The statistics the benchmarks report: percentiles within a run, the spread across runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure over repeated runs: on a noisy machine the median is the figure, and
    min and max say how far a single run can stray from it."""

    low: float
    median: float
    high: float
    runs: int


def spread(values: Sequence[float]) -> Spread | None:
    """The spread of the runs' figures; None when no run gave one."""
    if not values:
        return None
    return Spread(min(values), statistics.median(values), max(values), len(values))
