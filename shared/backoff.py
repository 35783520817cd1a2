"""Exponential backoff with full jitter (AWS architecture blog's "full jitter").

sleep = random(0, min(cap, base * 2**attempt)); reset after a success. Pure:
the caller sleeps, and tests pass their own random source.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base <= 0 or cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # cap the exponent too, so a long outage cannot overflow the float
        return min(self.cap, self.base * 2 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
