"""bench/fuzz.py still runs: a few thousand hostile frames and DNS packets at a live cluster,
no crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_fuzz_run_crashes_nothing_and_leaves_the_mesh_whole(tmp_path, record_figure):
    out = tmp_path / "fuzz.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--frames", "4000", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # the output names the seed
    assert "Traceback" not in done.stderr, done.stderr
    result = json.loads(out.read_text())
    assert result["frames"] == 4000
    assert result["hostile_frames"] > 0 and result["connections"] > 20
    assert result["crashes"] == 0 and not result["exited"] and not result["log_findings"]
    assert result["mesh_checks"] >= 1 and not result["mesh_broken"] and result["mesh_whole"]
    assert result["members_exact_after"], result["problem_after"]  # every ghost gone again
    assert result["not_closed"] == 0 and result["connect_failures"] == 0
    # the DNS part: a quarter as many packets at every DNS port, over UDP and TCP
    assert result["dns_packets"] >= 1000 and result["dns_hostile"] > 0
    assert result["dns_udp_answers"] > 0 and result["dns_tcp_connections"] > 0
    assert result["dns_not_closed"] == 0 and result["dns_answering_after"]
    record_figure(
        f"fuzz smoke: {result['frames']} frames over {result['connections']} connections",
        result["frames_per_second"],
        "frames/s",
    )
