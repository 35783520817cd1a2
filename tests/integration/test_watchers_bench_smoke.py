"""bench/watchers.py still runs: small numbers, sane figures (never a timing threshold)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_watchers_benchmark_runs_and_its_figures_are_sane(record_figure):
    args = ["--queries", "50", "--streams", "50", "--changes", "5", "--settle", "0.5", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.watchers", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    result = json.loads(done.stdout)
    assert (result["queries"], result["streams"], result["changes"]) == (50, 50, 5)
    # every watcher saw every change, none ended early, nothing went wrong in the client
    assert result["changes_missed"] == 0
    assert result["watchers_ended_early"] == 0
    assert result["client_errors"] == []
    assert 0 < result["all_saw_p50_ms"] <= result["all_saw_p99_ms"] <= result["all_saw_max_ms"]
    # the distributor's own figures, read from /proc
    assert 5 < result["rss_idle_mb"] and 5 < result["rss_open_mb"]
    assert result["rss_after_changes_mb"] > 5
    assert result["kb_per_watcher"] is not None
    assert result["cpu_open_s"] >= 0 and result["cpu_idle_s_per_s"] >= 0
    assert result["cpu_per_change_ms"] >= 0
    # stopped with every watcher open: it exited, and printed no traceback
    assert result["stop_seconds"] > 0
    assert result["stop_tracebacks"] == 0
    record_figure(
        "watchers bench smoke: all 100 watchers saw a change (p50)", result["all_saw_p50_ms"], "ms"
    )
