"""The results as tables on stdout, a JSON file and a PNG of the storm.

The last table is issue 15's: one row a figure, with min / median / max over the run's
repeats, the yardstick measured in the same run and the ratio to it, and the goal.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import detection, gateway
from bench.stats import spread

STORM_GOALS = {400: 0.15, 1000: 0.5, 5000: 5.0, 10000: 10.0}  # issues 15 and 23, seconds
STORM_CPU_GOALS = {10000: 3.5}  # issue 23: the distributor's CPU s (user+sys) in the storm
# a goal: a comparison, a number, and a unit ("x": of the yardstick, so on the ratios)
_GOAL = re.compile(r"(<=|>=|<|>)\s*([0-9][0-9.,]*)\s*(x|[A-Za-z]+)?")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda v, g: v < g,
    "<=": lambda v, g: v <= g,
    ">": lambda v, g: v > g,
    ">=": lambda v, g: v >= g,
}
# a storm run not done within its budget, or whose clients failed: the storm table's note
# says which
INCOMPLETE = "incomplete"


def _table(headers: list[str], rows: list[list[Any]], words: tuple[int, ...] = ()) -> str:
    """Columns right-aligned, for figures; those in `words` hold words, left-aligned."""
    cells = [headers, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def aligned(column: int, cell: str) -> str:
        width = widths[column]
        return cell.ljust(width) if column in words else cell.rjust(width)

    lines = [" | ".join(aligned(i, c) for i, c in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


_FORMATS: dict[str, Callable[[float], str]] = {
    "s": lambda v: f"{v:.3f} s",
    "ms": lambda v: f"{v:.2f} ms",
    "us": lambda v: f"{v:.0f} us",
    "MB": lambda v: f"{v:.1f} MB",
    "B": lambda v: f"{v:.1f} B",
    "rps": lambda v: f"{v:,.0f} rps",
}


@dataclass
class Row:
    """One row of issue 15's table: a figure over the run's repeats, beside its yardstick."""

    what: str
    unit: str  # a key of _FORMATS
    runs: list[float]  # one a run; inf for a run that did not complete
    goal: str
    yardstick: str = ""  # what it is compared with, and that one's figure in this run
    ratios: list[float] = field(default_factory=list)  # to the yardstick: one a run, or one
    on_ratio: bool = False  # the goal is the ratio's even without an "x" (rps of the bare)

    def status(self) -> str:
        """Issue 23: "met" only when every run (or ratio) meets the goal, "not met" when
        none does, "not settled" when the spread crosses it; "-" with no goal or figure."""
        goal = _GOAL.fullmatch(self.goal.strip())
        if goal is None:
            return "-"
        op, number, unit = goal.groups()
        values = self.ratios if unit == "x" or self.on_ratio else self.runs
        if not values:
            return "-"
        bound = float(number.replace(",", ""))
        meets = [_COMPARE[op](v, bound) for v in values]  # inf (incomplete) fails a "<"
        return "met" if all(meets) else "not met" if not any(meets) else "not settled"

    def _figure(self, value: float | None) -> str:
        if value is None:
            return "-"
        return INCOMPLETE if math.isinf(value) else _FORMATS[self.unit](value)

    def cells(self) -> list[str]:
        figures = spread(self.runs)
        ratios = spread([r for r in self.ratios if math.isfinite(r)])
        ratio = ""
        if ratios is not None:
            ratio = f"{ratios.median:.2f}"
            if ratios.runs > 1:
                ratio += f" ({ratios.low:.2f}-{ratios.high:.2f})"
        return [
            self.what,
            *(
                self._figure(None if figures is None else getattr(figures, end))
                for end in ("low", "median", "high")
            ),
            self.yardstick,
            ratio,
            self.goal,
            self.status(),
        ]

    def to_json(self) -> dict[str, Any]:
        def finite(value: float | None) -> float | None:
            return None if value is None or math.isinf(value) else value

        figures = spread(self.runs)
        ratios = spread([r for r in self.ratios if math.isfinite(r)])
        return {
            "what": self.what,
            "unit": self.unit,
            "runs": [finite(v) for v in self.runs],  # null: that run did not complete
            **{
                end: finite(None if figures is None else getattr(figures, attr))
                for end, attr in (("min", "low"), ("median", "median"), ("max", "high"))
            },
            "yardstick": self.yardstick,
            "ratio": None if ratios is None else ratios.median,
            "ratio_min": None if ratios is None else ratios.low,
            "ratio_max": None if ratios is None else ratios.high,
            "goal": self.goal,
            "status": self.status(),
        }


def _ran(entry: dict[str, Any]) -> bool:
    """A storm that ran moved bytes (hellos at least); one skipped after a smaller N failed
    did not."""
    return entry["bytes_sent"] > 0


def _storm_rows(results: dict[str, Any]) -> list[Row]:
    plan, storm = results["plan"], results["storm"]
    rows = []
    for n in plan["storm_rows"]:
        runs = [
            e["seconds"] if e["completed"] else math.inf
            for e in storm
            if e["mode"] == "delta" and e["n"] == n and _ran(e)
        ]
        what = f"storm N={n:,} (all hold all)" + ("" if runs else ", not run")
        row = Row(what, "s", runs, f"< {STORM_GOALS[n]:g} s" if n in STORM_GOALS else "")
        naive = [e for e in storm if e["mode"] == "naive" and e["n"] == n and _ran(e)]
        if naive:
            seconds = naive[0]["seconds"] if naive[0]["completed"] else None
            shown = INCOMPLETE if seconds is None else f"{seconds:.3f} s"
            row.yardstick = f"naive {shown}, {naive[0]['peak_rss_mb']} MB"
            median = spread(runs)
            if seconds and median is not None and math.isfinite(median.median):
                row.ratios = [median.median / seconds]
        rows.append(row)
        if n in STORM_CPU_GOALS:
            cpu = [
                e["distributor_cpu_s"] if e["completed"] else math.inf
                for e in storm
                if e["mode"] == "delta" and e["n"] == n and _ran(e) and "distributor_cpu_s" in e
            ]
            rows.append(
                Row(f"storm N={n:,}: the distributor's CPU", "s", cpu, f"<= {STORM_CPU_GOALS[n]} s")
            )
    n = plan["bytes_n"]
    per_entry = [
        e["bytes_sent"] / n**2
        for e in storm
        if e["mode"] == "delta" and e["n"] == n and e["completed"]
    ]
    rows.append(
        Row(f"bytes per member entry delivered (bytes/N^2, N={n:,})", "B", per_entry, "<= 70")
    )
    return rows


def _messaging_rows(results: dict[str, Any]) -> list[Row]:
    runs = results["messaging"]

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def row(what: str, unit: str, key: str, goal: str, yardstick: str, ratio: str) -> Row:
        """The mesh's figure `key` of each run, and that run's `ratio` to the bare echo."""
        figures, ratios = [run[key] for run in runs], [run[ratio] for run in runs]
        return Row(what, unit, figures, goal, yardstick, ratios, on_ratio=unit == "rps")

    bare_rps = f"bare echo {median('bare_rps'):,.0f} rps, batched {median('bare_batched_rps'):,.0f}"
    return [
        # each run's ratio: the median of its rounds' ratios to the round's better bare echo
        row(
            "request rps, node to node / bare echo", "rps", "mesh_rps", ">= 0.8", bare_rps, "ratio"
        ),
        row(
            "request latency p50, one in flight",
            "us",
            "mesh_p50_us",
            "<= 1.2x",
            f"bare echo {median('bare_p50_us'):.0f} us",
            "latency_ratio",
        ),
    ]


def _propagation_rows(results: dict[str, Any]) -> list[Row]:
    runs = results["propagation"]
    rows = []
    for kind in ("join", "leave", "crash"):
        product = [r[kind]["p50_ms"] for r in runs["distributor"]]
        bare = [r[kind]["p50_ms"] for r in runs["broadcaster"]]
        n = runs["distributor"][0][kind]["n"]
        row = Row(f"propagation to {n - 1} clients, {kind} p50", "ms", product, "<= 1.2x")
        bare_p50 = spread(bare)
        if bare_p50 is not None:
            row.yardstick = f"bare broadcaster {bare_p50.median:.2f} ms"
            # each distributor run beside the broadcaster run measured next to it
            row.ratios = [p / b for p, b in zip(product, bare, strict=True)]
        rows.append(row)
    return rows


def rows(results: dict[str, Any]) -> list[Row]:
    """Issue 15's table, in its order."""
    memory = results["memory"]
    idle = [run["idle_node_mb"] for run in memory]
    over_idle = [run["gateway_node_over_idle_mb"] for run in memory]
    loaded = [run["distributor_loaded"] for run in memory]
    loaded_mb = [math.inf if e["mb"] is None else e["mb"] for e in loaded]
    loaded_what = (
        f"distributor with {loaded[0]['members']:,} members and {loaded[0]['watchers']:,} "
        "watchers, RSS"
    )
    one_join = results["one_join"]
    what = f"one join reaching all of {one_join['n']:,} connected nodes"
    if not one_join["completed"]:
        what += " (not completed: see above)"
    return [
        *_storm_rows(results),
        *_messaging_rows(results),
        *_propagation_rows(results),
        Row("idle node RSS", "MB", idle, "-"),  # the gateway brought aiohttp's client in
        Row(
            "node with its gateway and 32 checked instances, over an idle one",
            "MB",
            over_idle,
            "<= 3 MB",
        ),
        Row(loaded_what, "MB", loaded_mb, "< 300 MB"),
        # its runs are joins to the same connected nodes (bench/onejoin.py)
        Row(what, "ms", one_join["trials_ms"], "< 200 ms"),
    ]


def bytes_exponent(storm: list[dict[str, Any]], mode: str) -> float | None:
    """b in bytes ~ N^b, fitted to the completed runs of one mode."""
    points = [(e["n"], e["bytes_sent"]) for e in storm if e["mode"] == mode and e["completed"]]
    if len({n for n, _ in points}) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(b) for _, b in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num / sum((x - mx) ** 2 for x in xs)


def _storm_text(storm: list[dict[str, Any]]) -> list[str]:
    def seconds(e: dict[str, Any]) -> str | None:
        return None if e["seconds"] is None else f"{e['seconds']:.3f}"

    out = [
        "storm (one distributor, N raw clients dialling at once; every run; CPU s is user+sys)",
        _table(
            [
                "N",
                "mode",
                "round",
                "seconds",
                "bytes/N^2",
                "distributor CPU s",
                "clients CPU s",
                "peak_rss_mb",
                "note",
            ],
            [
                [
                    e["n"],
                    e["mode"],
                    e.get("round"),
                    seconds(e),
                    round(e["bytes_sent"] / e["n"] ** 2, 1),
                    e.get("distributor_cpu_s"),
                    e.get("clients_cpu_s"),
                    e["peak_rss_mb"],
                    e["note"],
                ]
                for e in sorted(storm, key=lambda e: (e["mode"], e["n"], e.get("round", 0)))
            ],
            words=(8,),
        ),
    ]
    for mode in ("delta", "naive"):
        exponent = bytes_exponent(storm, mode)
        if exponent is not None:
            out.append(f"{mode}: bytes_sent ~ N^{exponent:.2f}")
    return out


def _propagation_text(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [
        "propagation (every other client hears member_joined / member_left; one line a run)",
        _table(
            ["server", "event", "n", "trials", "p50_ms", "p99_ms", "slowest receiver p50_ms"],
            [
                [server, kind, v["n"], v["trials"], v["p50_ms"], v["p99_ms"], v["p50_last_ms"]]
                for server, server_runs in runs.items()
                for kind in ("join", "leave", "crash")
                for v in (run[kind] for run in server_runs)
            ],
        ),
    ]


def _messaging_text(runs: list[dict[str, Any]]) -> list[str]:
    keys = [
        "bare_rps",
        "bare_batched_rps",
        "mesh_rps",
        "ratio",
        "bare_p50_us",
        "mesh_p50_us",
        "latency_ratio",
    ]

    def rounds(run: dict[str, Any], key: str) -> str:
        values = run.get(key) or [run[key[:-1]]]
        return f"{min(values):.2f}-{max(values):.2f}"

    return [
        "messaging (rps with many in flight: bare echo unbatched and batched, the mesh link; "
        "ratio to the better bare; p50 one in flight; one line a run, each the median of its "
        "rounds, which took turns; the rounds' ratios min-max)",
        _table(
            ["run", *keys, "rounds' ratios", "rounds' latency ratios"],
            [
                [i, *(run[k] for k in keys), rounds(run, "ratios"), rounds(run, "latency_ratios")]
                for i, run in enumerate(runs, 1)
            ],
        ),
    ]


def _one_join_text(one_join: dict[str, Any]) -> str:
    line = f"one join reaching all of {one_join['n']:,} connected nodes"
    if one_join["trials_ms"]:
        line += ", one figure a join: " + ", ".join(f"{ms:.1f}" for ms in one_join["trials_ms"])
        line += " ms"
    if not one_join["completed"]:
        return f"{line}; not completed: {one_join['note']}"
    return (
        f"{line}; connecting them took {one_join['setup_s']} s; CPU per join: distributor "
        f"{one_join['distributor_cpu_ms']} ms; CPU over all joins: clients "
        f"{one_join['clients_cpu_s']} s"
    )


def text(results: dict[str, Any]) -> str:
    out = _storm_text(results["storm"])
    out += ["", *_propagation_text(results["propagation"])]
    out += ["", *_messaging_text(results["messaging"])]
    memory = results["memory"]
    out += [
        "",
        "memory, one figure a run: idle node "
        + ", ".join(str(m["idle_node_mb"]) for m in memory)
        + " MB RSS; with 100 peers "
        + ", ".join(str(m["node_100_peers_mb"]) for m in memory)
        + " MB",
    ]
    out += ["", _one_join_text(results["one_join"])]
    if "detection" in results:
        out += ["", detection.table(results["detection"])]
    if "gateway" in results:
        out += ["", gateway.text(results["gateway"])]
    plan = results["plan"]
    out += [
        "",
        f"issue 15: min / median / max over {plan['repeats']} run(s) of each; the yardsticks "
        "measured in this run; ratio to the yardstick: median (min-max) of the runs' ratios",
        _table(
            ["what", "min", "median", "max", "yardstick", "ratio", "goal", "status"],
            [row.cells() for row in rows(results)],
            words=(0,),
        ),
    ]
    return "\n".join(out)


def write(results: dict[str, Any], json_path: Path, png_path: Path) -> None:
    """The JSON (every raw run, and the table's rows) and the storm's plot."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    document = {**results, "table": [row.to_json() for row in rows(results)]}
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    plot(results["storm"], results["plan"]["storm_budget_s"], png_path)


def plot(storm: list[dict[str, Any]], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    delta = [e for e in storm if e["mode"] == "delta" and _ran(e)]
    sizes = sorted({e["n"] for e in delta})
    done = {
        n: spread([e["seconds"] for e in delta if e["n"] == n and e["completed"]]) for n in sizes
    }
    timed = [(n, s) for n, s in done.items() if s is not None]
    if timed:
        left.errorbar(
            [n for n, _ in timed],
            [s.median for _, s in timed],
            yerr=[[s.median - s.low for _, s in timed], [s.high - s.median for _, s in timed]],
            fmt="o-",
            color="C0",
            capsize=3,
            label="delta (median, min-max)",
        )
    unfinished = [n for n in sizes if any(not e["completed"] for e in delta if e["n"] == n)]
    if unfinished:
        left.plot(
            unfinished,
            [budget] * len(unfinished),
            "x",
            color="C0",
            markersize=9,
            label=f"delta: a run not done in {budget:g} s",
        )
    goals = sorted(STORM_GOALS.items())
    left.plot(*zip(*goals, strict=True), "_", color="C2", markersize=14, mew=2, label="goal")
    for mode, style in (("naive", "s-"), ("naive-model", "s--")):
        points = [(e["n"], e["seconds"]) for e in storm if e["mode"] == mode and e["seconds"]]
        if points:
            left.plot(*zip(*points, strict=True), style, color="C3", label=mode)
    left.set_title("join storm: time until every client holds all N")
    left.set_ylabel("seconds")
    # a run that stopped short has a partial byte count: the median of the completed ones
    for mode, style, colour in (
        ("delta", "o-", "C0"),
        ("naive", "s-", "C3"),
        ("naive-model", "s--", "C3"),
    ):
        entries = [
            e for e in storm if e["mode"] == mode and (e["completed"] or mode == "naive-model")
        ]
        sized = [
            (n, statistics.median(e["bytes_sent"] for e in entries if e["n"] == n))
            for n in sorted({e["n"] for e in entries})
        ]
        if sized:
            right.plot(*zip(*sized, strict=True), style, color=colour, label=mode)
    right.set_title("join storm: bytes the distributor sent")
    right.set_ylabel("bytes")
    ticks = sorted({e["n"] for e in storm} | set(STORM_GOALS))
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlim(right=13000)  # the axis reaches N=10,000 whether or not it completed
        axes.set_xticks(ticks, [f"{n:,}" for n in ticks], fontsize="small")
        axes.minorticks_off()
        axes.set_xlabel("N (nodes)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
