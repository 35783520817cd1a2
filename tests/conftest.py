"""Shared test set-up: testcontainers without Ryuk, and measured figures in the summary."""

import os

# Ryuk (testcontainers' reaper) is an image from a registry, and no image can be pulled here;
# our fixtures tear down what they start. Set before anything imports testcontainers.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import pytest

_FIGURES: list[str] = []


@pytest.fixture(scope="session")
def record_figure():
    """Records a measured figure (a timing, a count) to print at the end of the run.

    Tests print figures; they never pass or fail on a time (DESIGN.md, "Timing").
    """

    def record(name: str, value: object, unit: str = "s") -> None:
        shown = f"{value:.3f}" if isinstance(value, float) else f"{value}"
        _FIGURES.append(f"{name}: {shown} {unit}".rstrip())

    return record


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("measured figures (printed, never asserted)")
        for line in _FIGURES:
            terminalreporter.write_line(line)
