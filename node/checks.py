"""One health check's state: Consul's StatusHandler, plus its deregister timer.

Pure: no clock (every call is given `now`), no I/O. The checker (node/checker.py) runs
the probe and hands each result here; this is the one place that decides what a result
does to the status, so the thresholds are applied the same way for every kind of check.

The rules are Consul's (agent/checks/check.go, StatusHandler.updateCheck):
- passing and warning both count as successes: they reset the failure count, and once
  SuccessBeforePassing successes in a row are reached the status becomes that result
  (warning stays warning: a 429 is not turned into passing);
- critical counts as a failure: it resets the success count, and once
  FailuresBeforeCritical failures in a row are reached the status becomes critical;
- both counts start at their thresholds, so the very first result counts at once,
  whatever the thresholds (Consul: "immediately update status after first check");
- a result that does not reach its threshold changes nothing, its output included.
The deregister timer is Consul's too: a check critical for DeregisterCriticalServiceAfter
(counted from the moment it became critical, the initial status included) is due.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.definitions import CheckDefinition
from shared.wire import HEALTH


class CheckState:
    """The status, the last output and the counters of one check."""

    __slots__ = ("_failures", "_successes", "critical_since", "definition", "output", "status")

    def __init__(self, definition: CheckDefinition, now: float) -> None:
        self.definition = definition
        self.status = definition.status
        self.output = ""
        # when the check last became critical; None while it is not
        self.critical_since: float | None = now if self.status == "critical" else None
        self._successes = definition.success_before_passing
        self._failures = definition.failures_before_critical

    def record(self, result: str, output: str, now: float) -> bool:
        """One probe's result (one of HEALTH) and its output; True when `status` changed."""
        if result not in HEALTH:
            raise ValueError(f"a check result is one of {', '.join(HEALTH)}, got {result!r}")
        if result == "critical":
            self._successes = 0
            # capped at the threshold: past it every count behaves the same
            self._failures = min(self._failures + 1, self.definition.failures_before_critical)
            if self._failures < self.definition.failures_before_critical:
                return False
        else:
            self._failures = 0
            self._successes = min(self._successes + 1, self.definition.success_before_passing)
            if self._successes < self.definition.success_before_passing:
                return False
        self.output = output
        if result == self.status:
            return False
        if result == "critical":
            self.critical_since = now
        elif self.status == "critical":
            self.critical_since = None
        self.status = result
        return True

    def deregister_due(self, now: float) -> bool:
        """True once the check has been critical for its DeregisterCriticalServiceAfter."""
        after = self.definition.deregister_after
        since = self.critical_since
        return after is not None and since is not None and now - since >= after


def worst(statuses: Iterable[str]) -> str:
    """The worst of some statuses, as an instance's health: no check at all is passing."""
    return max(statuses, key=HEALTH.index, default="passing")
