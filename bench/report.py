"""The results as tables on stdout, a JSON file (DESIGN.md's keys) and a PNG beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import detection

GOALS = (
    "goals (printed, never asserted): storm N=400 under 0.3 s, N=10,000 under 10 s, "
    "bytes ~ N^2 in all (O(N) an event); mesh rps >= 0.8 x bare echo"
)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def bytes_exponent(storm: list[dict[str, Any]], mode: str) -> float | None:
    """b in bytes ~ N^b, fitted to the completed runs of one mode."""
    points = [(e["n"], e["bytes_sent"]) for e in storm if e["mode"] == mode and e["completed"]]
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(b) for _, b in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num / sum((x - mx) ** 2 for x in xs)


def text(results: dict[str, Any]) -> str:
    storm = results["storm"]
    out = [
        "storm (one distributor, N raw clients dialling at once)",
        _table(
            ["N", "mode", "seconds", "bytes_sent", "bytes/N^2", "peak_rss_mb", "note"],
            [
                [
                    e["n"],
                    e["mode"],
                    None if e["seconds"] is None else f"{e['seconds']:.3f}",
                    f"{e['bytes_sent']:,}",
                    round(e["bytes_sent"] / e["n"] ** 2, 1),
                    e["peak_rss_mb"],
                    e["note"],
                ]
                for e in storm
            ],
        ),
    ]
    for mode in ("delta", "naive"):
        exponent = bytes_exponent(storm, mode)
        if exponent is not None:
            out.append(f"{mode}: bytes_sent ~ N^{exponent:.2f}")
    prop = results["propagation"]
    out += [
        "",
        "propagation (every other client hears member_joined / member_left)",
        _table(
            ["event", "n", "trials", "p50_ms", "p99_ms", "slowest receiver p50_ms"],
            [
                [k, v["n"], v["trials"], v["p50_ms"], v["p99_ms"], v["p50_last_ms"]]
                for k, v in prop.items()
            ],
        ),
    ]
    msg = results["messaging"]
    out += [
        "",
        f"messaging (rps at concurrency {msg['mesh']['concurrency']}, latency one at a time)",
        _table(
            ["path", "rps", "p50_us", "p99_us"],
            [
                [name, msg[key]["rps"], msg[key]["p50_us"], msg[key]["p99_us"]]
                for name, key in (
                    ("bare echo (uvloop)", "bare_echo"),
                    ("mesh link (uvloop)", "mesh"),
                    ("mesh link (asyncio loop)", "asyncio_mesh"),
                )
            ],
        ),
        f"mesh / bare rps ratio: {msg['ratio']}",
    ]
    mem = results["memory"]
    out += [
        "",
        f"memory: idle node {mem['idle_node_mb']} MB RSS, "
        f"node with 100 peers {mem['node_100_peers_mb']} MB RSS",
    ]
    if "detection" in results:
        out += ["", detection.table(results["detection"])]
    out += ["", GOALS]
    return "\n".join(out)


def write(results: dict[str, Any], json_path: Path) -> Path:
    """The JSON at json_path and the plot beside it; returns the plot's path."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    png = json_path.with_suffix(".png")
    plot(results["storm"], png)
    return png


def plot(storm: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"delta": ("o-", "C0"), "naive": ("s-", "C3"), "naive-model": ("s--", "C3")}
    for mode, (style, colour) in styles.items():
        timed = [(e["n"], e["seconds"]) for e in storm if e["mode"] == mode and e["seconds"]]
        sized = [(e["n"], e["bytes_sent"]) for e in storm if e["mode"] == mode and e["bytes_sent"]]
        if mode != "naive-model":  # a run that stopped short has a partial byte count
            sized = [
                (e["n"], e["bytes_sent"]) for e in storm if e["mode"] == mode and e["completed"]
            ]
        if timed:
            left.plot(*zip(*timed, strict=True), style, color=colour, label=mode)
        if sized:
            right.plot(*zip(*sized, strict=True), style, color=colour, label=mode)
    left.set_title("join storm: time until every client holds all N")
    left.set_ylabel("seconds")
    right.set_title("join storm: bytes the distributor sent")
    right.set_ylabel("bytes")
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("N (nodes)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
