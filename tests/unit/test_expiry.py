"""Request timeouts in shared buckets (node/expiry.py): each future fails at its deadline,
a discarded or answered one never does, and requests due together share one timer."""

from __future__ import annotations

import asyncio

import pytest

from node.expiry import GRAIN, Expiry


async def test_a_future_fails_at_its_deadline_and_not_before() -> None:
    loop = asyncio.get_running_loop()
    expiry = Expiry()
    future: asyncio.Future[None] = loop.create_future()
    deadline = loop.time() + 0.05
    expiry.add(deadline, future)
    with pytest.raises(TimeoutError):
        await future
    assert loop.time() >= deadline
    assert len(expiry) == 0


async def test_a_discarded_or_answered_future_is_left_alone() -> None:
    loop = asyncio.get_running_loop()
    expiry = Expiry()
    answered: asyncio.Future[str] = loop.create_future()
    discarded: asyncio.Future[str] = loop.create_future()
    deadline = loop.time() + 0.02
    expiry.add(deadline, answered)
    key = expiry.add(deadline, discarded)
    answered.set_result("answer")
    expiry.discard(key, discarded)
    assert len(expiry) == 1  # the answered one stays until its slice is due
    await asyncio.sleep(0.02 + 3 * GRAIN)
    assert answered.result() == "answer"
    assert not discarded.done()
    assert len(expiry) == 0


async def test_requests_due_in_one_slice_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    timers = []
    call_at = loop.call_at

    def counting_call_at(*args: object) -> asyncio.TimerHandle:
        timers.append(args[0])
        return call_at(*args)  # type: ignore[arg-type]

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        expiry = Expiry()
        start = (int(loop.time() / GRAIN) + 1) * GRAIN  # the start of a slice
        futures = [loop.create_future() for _ in range(100)]
        for i, future in enumerate(futures):
            expiry.add(start + 0.001 + i * GRAIN / 200, future)  # all in one slice
        expiry.add(start + 3 * GRAIN, loop.create_future())  # a later one: its own timer
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
    assert len(timers) == 2
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(result, TimeoutError) for result in results)
