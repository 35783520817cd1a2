"""harness.waiting.Sampler: whatever goes wrong in the sampling fails the block."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.waiting import Sampler


class CountingCheck:
    """A check for a Sampler that counts its calls and answers `answer(n)` on the nth."""

    def __init__(self, answer: Callable[[int], str | None]) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.answer(self.calls)


def test_a_condition_that_holds_passes_and_is_sampled_from_the_start():
    with Sampler("always fine", lambda: None, every=0.01) as sampler:
        pass  # a block shorter than `every` still gets its sample
    assert sampler.samples >= 1


def test_a_false_sample_fails_the_block_with_its_reason():
    check = CountingCheck(lambda call: "the third sample is bad" if call == 3 else None)
    with pytest.raises(AssertionError, match=r"1 of \d+ samples failed, first: the third"):
        with Sampler("mostly fine", check, every=0.01):
            while check.calls < 5:
                time.sleep(0.01)


def test_an_assertion_raised_by_the_check_fails_the_block_with_its_traceback():
    def answer(call: int) -> None:
        assert call < 3, "a non-200 answer"  # what Proc.get raises

    with pytest.raises(AssertionError, match=r"the check raised .* after 2 samples") as failed:
        with Sampler("answers 200", CountingCheck(answer), every=0.01):
            time.sleep(0.5)  # long after the check raised
    cause = failed.value.__cause__
    assert isinstance(cause, AssertionError) and "a non-200 answer" in str(cause)
    assert cause.__traceback__ is not None


def test_any_exception_raised_by_the_check_fails_the_block():
    def check() -> str | None:
        raise RuntimeError("not what the sampler expected")

    with pytest.raises(AssertionError, match="RuntimeError"):
        with Sampler("anything", check, every=0.01):
            time.sleep(0.1)


def test_too_few_samples_for_the_window_fail_the_block():
    """A check stuck for the whole window sampled once in a second, when 10 were due."""

    def stuck_once(call: int) -> None:
        if call == 1:
            time.sleep(1.0)

    with pytest.raises(AssertionError, match="the window was not watched"):
        with Sampler("watched", CountingCheck(stuck_once), every=0.05):
            time.sleep(1.0)


def test_a_failing_block_keeps_its_own_error_and_notes_the_samplers():
    with pytest.raises(ValueError, match="the block's own") as failed:
        with Sampler("fine", lambda: "broken", every=0.01):
            time.sleep(0.05)
            raise ValueError("the block's own")
    (note,) = failed.value.__notes__
    assert note.startswith("meanwhile, fine: ") and "samples failed, first: broken" in note
