from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import FAST, STEADY, Cluster


@pytest.fixture
def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """Clusters with short timings; every process is killed afterwards, logs shown on failure."""
    made: list[Cluster] = []

    def make(steady: bool = False) -> Cluster:
        cluster = Cluster(tmp_path, dict(STEADY if steady else FAST))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
    logs = {log.name: log.read_text(errors="replace") for log in sorted(tmp_path.glob("*.log"))}
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for name, text in logs.items():
            print(f"--- {name} (last lines) ---")
            print("\n".join(text.splitlines()[-30:]))
    # an error that escaped our own logging (asyncio's handler, an unraisable) prints raw
    escaped = [name for name, text in logs.items() if "\nTraceback (most recent" in f"\n{text}"]
    assert not escaped, f"raw tracebacks in {escaped}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
