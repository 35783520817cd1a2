"""The textbook comparison: a distributor that sends the whole list to everyone on every change.

`python -m bench.naive` takes the distributor's flags. It is the real server with one
change: where a delta would go out, every other link gets a full snapshot instead
(encoded once and batched per loop iteration, like the deltas). So an event costs
O(N^2) bytes in all and a storm O(N^3).
"""

from __future__ import annotations

import functools

from distributor.__main__ import parse, serve
from distributor.server import DistributorServer
from shared.program import run_program
from shared.wire import Delta


class NaiveServer(DistributorServer):
    def _broadcast(self, delta: Delta) -> None:
        """As the real server's, but the whole list goes out in place of the delta."""
        self._queue(self._snapshot())
        self.stats.events[delta.TYPE] += 1
        self._on_change()  # watchers (blocking queries, event streams) wake as they would


if __name__ == "__main__":
    run_program("naive-distributor", parse, functools.partial(serve, server_class=NaiveServer))
