"""The interval logs' plots: latency against offered load, and percentiles over time.

Drawn from the ``hlog`` part of the summary (:mod:`chatlog.report.hlogs`),
like the other plots with matplotlib's object API on the Agg canvas (no
pyplot, no display), matplotlib imported only when something is drawn.

- ``latency_vs_load.png``: for each file, the round-trip p50, p99 and p99.9
  of each step against its offered rate (log scale), the SLO and the answer
  (a vertical line, and in the legend); beside it, the achieved rate against
  the offered.  A step whose limit was
  the client is marked with a cross: it says nothing of the server.
- ``percentiles_over_time.png``: each file's percentiles interval by
  interval, a sweep's steps shaded and labelled with their rates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from chatlog.latency import PERCENTILES

#: At most this many files get their own panel over time.
MAX_TIME_PANELS = 6
_STYLES: dict[str, Literal[":", "-", "--"]] = {"p50": ":", "p99": "-", "p999": "--"}
#: Intervals further apart than this are not joined by a line.
GAP_S = 0.05
#: Rates spanning more than this factor are drawn on a logarithmic axis.
LOG_RATES = 20


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
    """Round-trip percentiles and achieved rate against the offered rate, one colour per file.

    One legend below both panels: a line per file (colour) with its answer,
    one per percentile (line style), the SLO, and the client's limit.  The
    rate axes are logarithmic when the rates span more than
    :data:`LOG_RATES` times (servers of very different capacity side by side).
    """
    curves = [f for f in files if any(p["count"] for p in f["steps"])]
    if not curves:
        return None
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colours = [f"C{i % 10}" for i in range(len(curves))]
    rates: list[float] = []
    slos = set()
    handles: list[Any] = []
    client_limited = False
    for colour, file in zip(colours, curves, strict=True):
        points = [p for p in file["steps"] if p["count"]]
        xs = [p["offered_msgs_per_s"] for p in points]
        rates += xs
        for key, style in _STYLES.items():
            ys = [p["rtt_ms"][key] for p in points]
            left.plot(xs, ys, linestyle=style, marker="o", markersize=3, color=colour)
        limited = [p for p in points if p.get("client_limited")]
        if limited:
            client_limited = True
            left.plot(
                [p["offered_msgs_per_s"] for p in limited],
                [p["rtt_ms"]["p99"] for p in limited],
                "x",
                markersize=10,
                color="red",
            )
        if file.get("max_rate_msgs_per_s"):
            left.axvline(file["max_rate_msgs_per_s"], color=colour, linewidth=0.8, linestyle="-.")
        if file.get("slo_p99_ms"):
            slos.add(file["slo_p99_ms"])
        handles.append(Line2D([], [], color=colour, marker="o", label=_file_label(file)))
        achieved = [(p["offered_msgs_per_s"], p["achieved_msgs_per_s"]) for p in points]
        achieved = [(x, y) for x, y in achieved if y is not None]
        if achieved:
            right.plot(*zip(*achieved, strict=True), marker="o", markersize=3, color=colour)
    for key, style in _STYLES.items():
        handles.append(Line2D([], [], color="black", linestyle=style, label=_label(key)))
    for slo in sorted(slos):
        left.axhline(slo, color="grey", linewidth=1, linestyle="--")
        handles.append(
            Line2D([], [], color="grey", linestyle="--", label=f"SLO: p99 \u2264 {slo:g} ms")
        )
    if client_limited:
        handles.append(
            Line2D(
                [],
                [],
                color="red",
                marker="x",
                linestyle="none",
                label="step limited by the client",
            )
        )
    low, high = min(rates), max(rates)
    right.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
    for ax in (left, right):
        if high > LOG_RATES * low:
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_rate))
        ax.set_xlabel("offered load (msgs/s, open loop)")
        ax.grid(True, alpha=0.3, which="both")
    left.set_yscale("log")
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left.set_title("Round-trip time against offered load")
    left.set_ylabel("round-trip time (ms, from the scheduled send)")
    right.set_title("Achieved against offered (grey dashed: all of it)")
    right.set_ylabel("achieved (msgs/s)")
    if high > LOG_RATES * low:
        right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(_rate))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 4),
        fontsize="small",
    )
    fig.savefig(path, format="png")
    return path


def _file_label(file: dict[str, Any]) -> str:
    """A file's legend entry: its name, its connections, and its answer."""
    name = file["label"]
    if file.get("connections"):
        name += f", {file['connections']} connections"
    answer = file.get("max_rate_msgs_per_s")
    if not answer:
        return f"{name}: no rate met the SLO" if file.get("slo_p99_ms") else name
    limited_by = file.get("limited_by")
    if limited_by == "server":
        return f"{name}: {answer:,.0f} msgs/s"
    why = "the client was the limit" if limited_by == "client" else "every step met the SLO"
    return f"{name}: \u2265 {answer:,.0f} msgs/s ({why})"


def _rate(value: float, _: object = None) -> str:
    """A rate's tick label: 500, 2k, 150k."""
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


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
