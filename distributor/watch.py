"""Waking watchers (blocking queries, event streams) when the registry's version moves.

One shared event, replaced at every change: a parked watcher costs one waiting future,
never a poll, and a change costs one wake-up per watcher however many are parked.
"""

from __future__ import annotations

import asyncio
import contextlib


class VersionWatch:
    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """The version moved: wake everyone waiting now; later waiters wait for the next."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout: float) -> bool:
        """Until the next change (True) or `timeout` seconds (False)."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await changed.wait()
        return changed.is_set()
