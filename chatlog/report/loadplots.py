"""The interval logs' plots: latency against offered load, and percentiles over time.

Drawn from the ``hlog`` part of the summary (:mod:`chatlog.report.hlogs`),
like the other plots with matplotlib's object API on the Agg canvas (no
pyplot, no display), matplotlib imported only when something is drawn.

- ``latency_vs_load.png``: for each file, the round-trip p50, p99 and p99.9
  of each step against its offered rate (log scale), the SLO and the answer;
  beside it, the achieved rate against the offered.  A step whose limit was
  the client is marked with a cross: it says nothing of the server.
- ``percentiles_over_time.png``: each file's percentiles interval by
  interval, a sweep's steps shaded and labelled with their rates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from chatlog.latency import PERCENTILES

#: At most this many files get their own panel over time.
MAX_TIME_PANELS = 6
_STYLES = {"p50": ":", "p99": "-", "p999": "--"}
#: Intervals further apart than this are not joined by a line.
GAP_S = 0.05


def draw_hlog_plots(files: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """Every hlog plot there is data for: name -> PNG path."""
    drawn: dict[str, Path | None] = {
        "latency_vs_load": plot_latency_vs_load(files, out / "latency_vs_load.png"),
        "percentiles_over_time": plot_percentiles_over_time(
            files, out / "percentiles_over_time.png"
        ),
    }
    return {name: path for name, path in drawn.items() if path is not None}


def plot_latency_vs_load(files: list[dict[str, Any]], path: Path) -> Path | None:
    """Round-trip percentiles and achieved rate against the offered rate, one colour per file."""
    curves = [f for f in files if any(p["count"] for p in f["steps"])]
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colours = [f"C{i % 10}" for i in range(len(curves))]
    top_rate = 0.0
    slos = set()
    for colour, file in zip(colours, curves, strict=True):
        points = [p for p in file["steps"] if p["count"]]
        xs = [p["offered_msgs_per_s"] for p in points]
        top_rate = max(top_rate, *xs)
        for key, style in _STYLES.items():
            ys = [p["rtt_ms"][key] for p in points]
            label = f"{file['label']} {_label(key)}"
            left.plot(xs, ys, linestyle=style, marker="o", markersize=3, color=colour, label=label)
        limited = [p for p in points if p.get("client_limited")]
        if limited:
            left.plot(
                [p["offered_msgs_per_s"] for p in limited],
                [p["rtt_ms"]["p99"] for p in limited],
                "x",
                markersize=10,
                color="red",
                label=f"{file['label']}: the client was the limit",
            )
        answer = file.get("max_rate_msgs_per_s")
        if answer:
            bound = "" if file.get("limited_by") == "server" else " (lower bound)"
            left.axvline(
                answer,
                color=colour,
                linewidth=0.8,
                linestyle="-.",
                label=f"{file['label']}: {answer:,.0f} msgs/s{bound}",
            )
        if file.get("slo_p99_ms"):
            slos.add(file["slo_p99_ms"])
        achieved = [(p["offered_msgs_per_s"], p["achieved_msgs_per_s"]) for p in points]
        achieved = [(x, y) for x, y in achieved if y is not None]
        if achieved:
            right.plot(*zip(*achieved, strict=True), marker="o", color=colour, label=file["label"])
    for slo in sorted(slos):
        left.axhline(slo, color="grey", linewidth=1, linestyle="--", label=f"SLO p99 {slo:g} ms")
    left.set_yscale("log")
    left.set_title("Round-trip percentiles against offered load")
    left.set_xlabel("offered (msgs/s)")
    left.set_ylabel("round-trip time (ms), from the scheduled send")
    left.set_xlim(left=0)
    left.grid(True, alpha=0.3, which="both")
    left.legend(loc="upper left", fontsize="x-small")
    right.plot([0, top_rate], [0, top_rate], color="grey", linewidth=0.8, linestyle="--")
    right.set_title("Achieved against offered")
    right.set_xlabel("offered (msgs/s)")
    right.set_ylabel("achieved (msgs/s)")
    right.set_xlim(left=0)
    right.set_ylim(bottom=0)
    right.grid(True, alpha=0.3)
    right.legend(loc="upper left", fontsize="small")
    fig.savefig(path, format="png")
    return path


def plot_percentiles_over_time(files: list[dict[str, Any]], path: Path) -> Path | None:
    """Each file's percentiles per interval; a sweep's steps shaded and labelled."""
    shown = [f for f in files if any(i["count"] for i in f["intervals"])][:MAX_TIME_PANELS]
    if not shown:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.2 * len(shown) + 0.8), dpi=100, layout="constrained")
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    for ax, file in zip(axes, shown, strict=True):
        intervals = [i for i in file["intervals"] if i["count"]]
        for name in (*PERCENTILES, "max"):
            xs: list[float] = []
            ys: list[float] = []
            for interval in intervals:
                if xs and interval["start"] - xs[-1] > GAP_S:
                    # Between a sweep's steps nothing was measured: no line across.
                    xs.append(math.nan)
                    ys.append(math.nan)
                # A step per interval, from its start to its end.
                xs += [interval["start"], interval["end"]]
                ys += [interval[name], interval[name]]
            ax.plot(xs, ys, label=_label(name), linewidth=1)
        for index, step in enumerate(s for s in file["steps"] if "start" in s):
            ax.axvspan(step["start"], step["end"], color="grey", alpha=0.06 + 0.06 * (index % 2))
            mark = "" if step.get("ok") else (" (client)" if step.get("client_limited") else " x")
            ax.annotate(
                f"{step['offered_msgs_per_s']:,.0f}/s{mark}",
                xy=(step["start"], 1.0),
                xycoords=("data", "axes fraction"),
                fontsize="x-small",
                rotation=90,
                va="top",
            )
        if file.get("slo_p99_ms"):
            ax.axhline(file["slo_p99_ms"], color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_title(f"{file['label']}: round-trip percentiles per interval")
        ax.set_xlabel("seconds since the start of the log")
        ax.set_ylabel("round-trip time (ms)")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(loc="upper right", fontsize="x-small")
    fig.savefig(path, format="png")
    return path


def _label(name: str) -> str:
    return "p99.9" if name == "p999" else name
