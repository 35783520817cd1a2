"""A blocking query asked again and again, as a watcher does (Consul's and the mesh's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp


async def indexes(
    session: aiohttp.ClientSession, url: Callable[[int], str], header: str, index: int
) -> AsyncIterator[int]:
    """GET `url(index)`, each time from the index the last answer gave in `header`: yields
    each answer's index, forever; a failed request or a bad header ends it with its error."""
    while True:
        async with session.get(url(index)) as resp:
            await resp.read()
            index = int(resp.headers[header])
        yield index
