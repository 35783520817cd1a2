"""Go's duration strings (time.ParseDuration), which Consul reads everywhere: a check's
Interval, a blocking query's `wait` ("500ms", "10s", "1m30s", Prometheus' "120000ms")."""

from __future__ import annotations

import re

MAX_DURATION_NS = 2**63 - 1  # Go's time.Duration range; past it ParseDuration fails

# one <number><unit> of a Go duration; at least one digit is checked apart
_DURATION_PART = re.compile("([0-9]*)(?:\\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # the micro sign
    "\u03bcs": 1_000,  # the Greek mu: Go accepts both
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(text: str, field: str) -> int:
    """Nanoseconds, exactly as Go's time.ParseDuration, except that a sign is refused."""
    bad = f'{field}: {text!r} is not a duration (such as "500ms", "10s", "1m30s")'
    rest = text[1:] if text[:1] in ("+", "-") else text
    if rest == "0":  # the one unitless duration Go accepts
        return 0
    if not rest:
        raise ValueError(bad)
    total = 0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError(bad)
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        if not whole and not fraction:  # ".s" and "s" are not numbers
            raise ValueError(bad)
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if fraction:
            # Go keeps a fraction's digits exactly (to the nanosecond), no float rounding
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > MAX_DURATION_NS:
            raise ValueError(f"{field}: {text!r} is out of range")
        pos = match.end()
    if text.startswith("-") and total:
        raise ValueError(f"{field}: must not be negative, got {text!r}")
    return total
