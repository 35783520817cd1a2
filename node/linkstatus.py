"""The state of one link as /v1/status shows it: state word, since, attempts, last error."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shared.timefmt import rfc3339


@dataclass(eq=False, slots=True)
class LinkStatus:
    state: str
    since: float = field(default_factory=time.time)  # wall clock, when the state last changed
    attempts: int = 0  # failed attempts since the last success
    last_error: str | None = None  # the last failure in a few words

    def set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        if error is not None:
            self.last_error = error

    def succeeded(self) -> None:
        self.attempts = 0
        self.last_error = None
        self.set("connected")

    def failed(self, state: str, error: str) -> None:
        self.attempts += 1
        self.set(state, error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": rfc3339(self.since),
            "attempts": self.attempts,
            "last_error": self.last_error,
        }
