"""Telling whoever waits that a process's view of the mesh may have changed.

A node's view (records, and the state of its links) changes in several places; each calls
`notify()`. Waiters (the Consul API's blocking queries) then look again: a notify with no
real change costs them a look, never a wrong answer. One shared event, replaced at every
notify: a waiter costs one future, never a poll. The distributor's VersionWatch
(distributor/watch.py) is one too, notified when its registry's version moves.
"""

from __future__ import annotations

import asyncio
import contextlib


class ViewSignal:
    def __init__(self) -> None:
        self._changed = asyncio.Event()
        # bumped at every notify: a reader that cached something at generation g knows
        # it must look again when the generation is no longer g
        self.generation = 0

    def notify(self) -> None:
        """The view may have changed: wake everyone waiting now."""
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout: float) -> bool:
        """Until the next notify (True) or `timeout` seconds (False)."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await changed.wait()
        return changed.is_set()
