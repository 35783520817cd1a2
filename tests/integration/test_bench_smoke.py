"""bench/ still runs: `python -m bench --smoke` writes real figures under DESIGN.md's keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_benchmark_writes_every_key_with_measured_figures(tmp_path, record_figure):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (path,) = tmp_path.glob("*.json")
    assert path.with_suffix(".png").stat().st_size > 0
    results = json.loads(path.read_text())
    assert set(results) == {"machine", "storm", "propagation", "messaging", "memory"}
    assert results["machine"]["cpus"] >= 1 and results["machine"]["packages"]["uvloop"]

    storm = results["storm"]
    assert {e["mode"] for e in storm} == {"delta", "naive"}
    for entry in storm:
        assert entry["completed"], entry
        assert entry["seconds"] > 0 and entry["peak_rss_mb"] > 0
        # every client holds a snapshot or a delta for each member: at least n^2 records
        assert entry["bytes_sent"] > entry["n"] ** 2 * 50, entry
    by = {(e["mode"], e["n"]): e["bytes_sent"] for e in storm}
    assert by[("naive", 50)] > 5 * by[("delta", 50)]  # the full list to everyone costs more

    for kind in ("join", "leave", "crash"):
        figures = results["propagation"][kind]
        assert figures["n"] == 50 and figures["trials"] == 3
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]

    messaging = results["messaging"]
    for path_name in ("bare_echo", "mesh", "asyncio_mesh"):
        figures = messaging[path_name]
        assert figures["rps"] > 0 and 0 < figures["p50_us"] <= figures["p99_us"]
    assert messaging["ratio"] > 0 and messaging["loop"] == "uvloop"

    memory = results["memory"]
    assert 5 < memory["idle_node_mb"] < memory["node_100_peers_mb"]
    record_figure("bench smoke: storm n=50 (delta)", by[("delta", 50)], "bytes")
