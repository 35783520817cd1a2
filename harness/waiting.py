"""Waiting and sampling: until something holds, and that something keeps holding.

They fail with AssertionError, so in a test the failure reads as one (DESIGN.md, "Timing":
generous deadlines, never a timing as a threshold; "never" is sampled continuously).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

# "within T" is asserted with 10 x T or 30 s, whichever is larger
DEADLINE = 30.0


def wait_for(what: str, predicate: Callable[[], T], timeout: float = DEADLINE) -> T:
    """Poll until predicate returns something truthy, and return it; fail with `what` otherwise.

    OSError, ValueError and KeyError from predicate mean "not up yet"; anything else fails.
    """
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what} (last error: {last!r})")


def holds(what: str, predicate: Callable[[], bool], seconds: float, every: float = 0.15) -> int:
    """Sample predicate continuously for `seconds`; fail at the first sample where it is false."""
    end = time.monotonic() + seconds
    samples = 0
    while time.monotonic() < end:
        assert predicate(), f"{what} stopped holding after {samples} samples"
        samples += 1
        time.sleep(every)
    return samples


class Sampler:
    """Samples a condition in a thread, every `every` s, while the test does something else.

    `check` returns a problem in words, or None. `with Sampler(...) as sampler:` samples from
    entry (the first sample at once) to exit. Leaving the block fails the test if a sample found a
    problem (the first one is shown), if `check` raised (its traceback is the cause), or if
    fewer than half the samples due were taken: a sampler that stalled watched nothing.
    A check slower than `every` delays the next sample rather than bunching them up, so
    only one slower than twice `every`, on average, runs short. If the block itself fails,
    that failure is the one reported, with the sampler's finding as a note.
    """

    def __init__(self, what: str, check: Callable[[], str | None], every: float = 0.15) -> None:
        self.what, self.check, self.every = what, check, every
        self.samples = 0
        self.failures: list[str] = []
        self.error: Exception | None = None
        self._started = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            try:
                problem = self.check()
            except Exception as exc:  # whatever it is fails the test, at exit
                self.error = exc
                return
            self.samples += 1
            if problem is not None:
                self.failures.append(problem)
            due = max(due + self.every, time.monotonic())
            if self._done.wait(due - time.monotonic()):
                return

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        problem = self._problem(time.monotonic() - self._started)
        if problem is None:
            return
        if exc is not None:
            exc.add_note(f"meanwhile, {problem}")
            return
        raise AssertionError(problem) from self.error

    def _problem(self, elapsed: float) -> str | None:
        """What went wrong over a window of `elapsed` seconds, in words; None if nothing."""
        if self.error is not None:
            return f"{self.what}: the check raised {self.error!r} after {self.samples} samples"
        if self.failures:
            return (
                f"{self.what}: {len(self.failures)} of {self.samples} samples failed, "
                f"first: {self.failures[0]}"
            )
        wanted = max(1, int(elapsed / self.every / 2))
        if self.samples < wanted:
            return (
                f"{self.what}: only {self.samples} samples in {elapsed:.1f} s, fewer than "
                f"{wanted} (half of one every {self.every:g} s): the window was not watched"
            )
        return None
