"""How late this process's own event loop runs (memberlist's awareness)."""

from __future__ import annotations

import asyncio
import collections

from shared.metrics import LAG_BUCKETS, Buckets


class LoopLag:
    """When this process's own timers fired late (memberlist's awareness).

    A liveness timeout is stretched by the stalls since the last frame came in,
    so a stalled process does not blame its peers for its own stall. Stalls that
    ended before that frame excuse nothing: a thawed process is as quick as ever
    to notice a peer that froze after it thawed.
    """

    STALL = 0.05  # lateness below this is scheduling noise, not a stall

    def __init__(self, interval: float = 0.1, window: float = 10.0) -> None:
        self.interval = interval
        # (loop time it ended, seconds): only real stalls, so usually empty and cheap to scan
        self._stalls: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=int(window / interval)
        )
        self._due: float | None = None  # when the sampler should wake next
        self.histogram = Buckets(LAG_BUCKETS)  # how late each tick was (mesh_event_loop_lag)

    def since(self, start: float, now: float) -> float:
        """Seconds this loop was stalled between loop times `start` and `now`.

        A stall still going on (the sampler itself is late) counts so far.
        """
        stalled = 0.0
        for ended, length in reversed(self._stalls):  # newest first: stop at the older ones
            if ended <= start:
                break
            stalled += min(length, ended - start)
        if self._due is not None and now - self._due > self.STALL:
            stalled += now - max(start, self._due)
        return stalled

    def tick(self, now: float) -> None:
        """The sampler woke at loop time `now`: note how late that was, and the next due time."""
        if self._due is not None:
            late = now - self._due
            self.histogram.observe(max(0.0, late))
            if late > self.STALL:
                self._stalls.append((now, late))
        self._due = now + self.interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.tick(loop.time())
            await asyncio.sleep(self.interval)
