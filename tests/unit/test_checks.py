"""node/checks.py: Consul's StatusHandler and the deregister timer, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.checks import CheckState, worst
from node.definitions import CheckDefinition

BASE = CheckDefinition(
    check_id="service:web",
    name="Service 'web' check",
    kind="http",
    target="http://127.0.0.1:8080/health",
    method="GET",
    headers=(),
    interval=10.0,
    timeout=1.0,
    success_before_passing=0,
    failures_before_critical=0,
    deregister_after=None,
    status="critical",
)


def state(now: float = 100.0, **changes: object) -> CheckState:
    return CheckState(replace(BASE, **changes), now)  # type: ignore[arg-type]


def test_initial_status_is_the_definitions_and_critical_by_default() -> None:
    assert state().status == "critical"
    assert state().output == ""
    assert state(status="passing").status == "passing"
    assert state(status="warning").status == "warning"


def test_without_thresholds_every_result_counts_and_true_means_changed() -> None:
    s = state()
    assert s.record("passing", "HTTP GET ...: 200 OK Output: ok", 101.0) is True
    assert (s.status, s.output) == ("passing", "HTTP GET ...: 200 OK Output: ok")
    # the same status again is no change, but its output is kept
    assert s.record("passing", "second", 102.0) is False
    assert s.output == "second"
    assert s.record("warning", "429", 103.0) is True
    assert s.status == "warning"
    assert s.record("critical", "500", 104.0) is True
    assert s.status == "critical"


def test_failures_before_critical() -> None:
    s = state(failures_before_critical=3)
    s.record("passing", "ok", 1.0)
    assert s.record("critical", "down 1", 2.0) is False
    assert s.record("critical", "down 2", 3.0) is False
    # below the threshold nothing changes, the output included (as Consul)
    assert (s.status, s.output) == ("passing", "ok")
    assert s.record("critical", "down 3", 4.0) is True
    assert (s.status, s.output) == ("critical", "down 3")


# Runs of results, each (status, whether it changes the check's status, the status after),
# one a second apart; the thresholds (and initial status) are the case's.
RUNS = {
    # Consul's NewStatusHandler starts both counters at their thresholds: the first result
    # counts at once, whatever the thresholds
    "the first passing counts at once": (
        {"success_before_passing": 3, "failures_before_critical": 3},
        [("passing", True, "passing")],
    ),
    "the first critical counts at once": (
        {"status": "passing", "success_before_passing": 3, "failures_before_critical": 3},
        [("critical", True, "critical")],
    ),
    "a success resets the failure count": (
        {"failures_before_critical": 2},
        [
            ("passing", True, "passing"),
            ("critical", False, "passing"),
            ("passing", False, "passing"),
            ("critical", False, "passing"),  # one in a row again, not two
            ("critical", True, "critical"),
        ],
    ),
    "success before passing, and a failure resets it": (
        {"success_before_passing": 2},
        [
            ("critical", False, "critical"),
            ("passing", False, "critical"),
            ("critical", False, "critical"),  # already critical: no change
            ("passing", False, "critical"),
            ("passing", True, "passing"),
        ],
    ),
    "warning counts as a success and stays warning": (
        {"success_before_passing": 2, "failures_before_critical": 2},
        [
            ("critical", False, "critical"),
            ("critical", False, "critical"),
            ("warning", False, "critical"),
            # passing and warning together make the run of successes
            ("passing", True, "passing"),
            ("warning", True, "warning"),  # a 429 is not turned into passing, nor critical
            ("critical", False, "warning"),  # one failure of two
        ],
    ),
}


@pytest.mark.parametrize(("changes", "run"), RUNS.values(), ids=RUNS.keys())
def test_runs_of_results(changes: dict[str, object], run: list[tuple[str, bool, str]]) -> None:
    s = state(**changes)
    for at, (status, changed, after) in enumerate(run, start=1):
        assert s.record(status, "output", float(at)) is changed, (at, status)
        assert s.status == after, (at, status)


def test_deregister_timer_runs_from_the_initial_critical_status() -> None:
    s = state(now=100.0, deregister_after=60.0)
    assert s.critical_since == 100.0
    assert not s.deregister_due(159.9)
    assert s.deregister_due(160.0)


def test_deregister_timer_restarts_when_the_check_becomes_critical_again() -> None:
    s = state(now=0.0, deregister_after=30.0)
    s.record("passing", "ok", 10.0)
    assert s.critical_since is None
    assert not s.deregister_due(1000.0)
    s.record("critical", "down", 50.0)
    assert s.critical_since == 50.0
    s.record("critical", "still down", 70.0)  # no change: the timer keeps running
    assert s.critical_since == 50.0
    assert not s.deregister_due(79.0)
    assert s.deregister_due(80.0)
    # warning is not critical: the timer stops
    s.record("warning", "429", 81.0)
    assert s.critical_since is None
    assert not s.deregister_due(500.0)


def test_deregister_timer_waits_for_the_threshold() -> None:
    s = state(now=0.0, status="passing", failures_before_critical=2, deregister_after=5.0)
    s.record("passing", "ok", 0.0)
    s.record("critical", "x", 1.0)
    assert s.critical_since is None  # not critical yet, so no timer
    s.record("critical", "x", 2.0)
    assert s.critical_since == 2.0
    assert s.deregister_due(7.0)


def test_no_deregister_without_the_setting() -> None:
    s = state(now=0.0)
    assert s.status == "critical"
    assert not s.deregister_due(1e9)


def test_record_refuses_what_is_not_a_status() -> None:
    with pytest.raises(ValueError, match="passing, warning, critical"):
        state().record("ok", "", 1.0)


def test_worst() -> None:
    assert worst([]) == "passing"
    assert worst(["passing"]) == "passing"
    assert worst(["passing", "warning"]) == "warning"
    assert worst(iter(["warning", "critical", "passing"])) == "critical"
