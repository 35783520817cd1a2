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


def test_the_first_result_counts_at_once_whatever_the_thresholds() -> None:
    # Consul's NewStatusHandler starts both counters at their thresholds
    s = state(success_before_passing=3, failures_before_critical=3)
    assert s.record("passing", "ok", 101.0) is True
    assert s.status == "passing"
    s = state(status="passing", success_before_passing=3, failures_before_critical=3)
    assert s.record("critical", "down", 101.0) is True
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


def test_a_success_resets_the_failure_count() -> None:
    s = state(failures_before_critical=2)
    s.record("passing", "ok", 1.0)
    assert s.record("critical", "x", 2.0) is False
    assert s.record("passing", "ok", 3.0) is False
    assert s.record("critical", "x", 4.0) is False  # one in a row again, not two
    assert s.status == "passing"
    assert s.record("critical", "x", 5.0) is True


def test_success_before_passing_and_a_failure_resets_it() -> None:
    s = state(success_before_passing=2)
    s.record("critical", "down", 1.0)
    assert s.record("passing", "ok", 2.0) is False
    assert s.record("critical", "down", 3.0) is False  # already critical: no change
    assert s.record("passing", "ok", 4.0) is False
    assert s.status == "critical"
    assert s.record("passing", "ok", 5.0) is True
    assert s.status == "passing"


def test_warning_counts_as_a_success_and_stays_warning() -> None:
    s = state(success_before_passing=2, failures_before_critical=2)
    s.record("critical", "down", 1.0)
    s.record("critical", "down", 2.0)
    assert s.record("warning", "429", 3.0) is False
    # passing and warning together make the run of successes
    assert s.record("passing", "200", 4.0) is True
    assert s.status == "passing"
    assert s.record("warning", "429", 5.0) is True
    assert s.status == "warning"  # a 429 is not turned into passing, nor critical
    assert s.record("critical", "500", 6.0) is False  # one failure of two
    assert s.status == "warning"


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
