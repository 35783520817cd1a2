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
from shared.wire import Message


class NaiveServer(DistributorServer):
    def _broadcast(self, message: Message) -> None:
        self._queue(self._snapshot())  # the whole list in place of the delta


if __name__ == "__main__":
    run_program("naive-distributor", parse, functools.partial(serve, server_class=NaiveServer))
