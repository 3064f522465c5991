"""The PNG plots: messages per second, concurrent connections, round trips, bench.

matplotlib's object API with the Agg canvas: no pyplot, so no global figure
state and no display needed.  matplotlib and numpy are imported inside the
functions that draw, so building a report without plots never loads them.
"""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from chatlog.latency import PERCENTILES
from chatlog.report.stats import PerSecond
from chatlog.report.summary import Report
from chatlog.report.text import stamp

# Timelines drawn with more points than this are averaged over wider bins.
MAX_PLOT_POINTS = 2000


def draw_all(report: Report, out: Path, bench: list[dict[str, Any]] | None) -> dict[str, Path]:
    """Every plot there is data for: name -> PNG path."""
    drawn: dict[str, Path | None] = {
        "messages": plot_messages(report, out / "messages_per_second.png"),
        "nodes": plot_nodes(report, out / "nodes.png"),
        "connections": plot_connections(report, out / "connections.png"),
        "rtt": plot_rtt(report, out / "rtt.png"),
        "rtt_over_time": plot_rtt_over_time(report, out / "rtt_over_time.png"),
    }
    if bench:
        drawn["bench"] = plot_bench(bench, out / "bench.png")
    return {name: path for name, path in drawn.items() if path is not None}


def plot_messages(report: Report, path: Path) -> Path | None:
    """Messages per second (server) and replies per second (client) over time."""
    # The server's line wide and pale, the client's thin and dashed on top:
    # when every message is answered at once the two are the same line, and
    # both must still be seen.
    series = [
        ("server: messages received", per_second(report.server.message_rate), _SERVER_STYLE),
        ("client: replies received", per_second(report.client.reply_rate), _CLIENT_STYLE),
    ]
    series = [entry for entry in series if entry[1]]
    mean = report.summary["messages"]["per_s"]["mean"]
    return _plot_rates(report, path, series, "Messages {per}", mean)


_SERVER_STYLE: dict[str, Any] = {"linewidth": 4, "alpha": 0.45}
_CLIENT_STYLE: dict[str, Any] = {"linewidth": 1.2, "linestyle": "--"}
#: A first or last second covered less than this is left out of a rate plot:
#: scaled up, a few events would draw a spike that never happened.
MIN_COVERED = 0.25


def per_second(rate: PerSecond) -> dict[int, float]:
    """Events per second, the first and the last second scaled to the part of them the run
    covered (a run starting at x.9 s had 0.1 s of its first second, not a slow start)."""
    counts: dict[int, float] = dict(rate.counts)
    if not counts or rate.first is None or rate.last is None:
        return counts
    first, last = int(rate.first), int(rate.last)
    if first == last:
        return counts  # under a second in all: its count is the figure
    for second, covered in ((first, first + 1 - rate.first), (last, rate.last - last)):
        if covered < MIN_COVERED:
            del counts[second]
        else:
            counts[second] /= covered
    return counts


def plot_nodes(report: Report, path: Path) -> Path | None:
    """A fleet: each node's clients' messages per second over time (health checks left out)."""
    if not report.summary.get("nodes") or report.nodes is None:
        return None
    series: list[tuple[str, dict[int, float], dict[str, Any]]] = [
        (name, {second: float(n) for second, n in figures.per_second.items()}, {})
        for name, figures in sorted(report.nodes.nodes.items())
        if figures.per_second
    ]
    return _plot_rates(report, path, series, "Messages {per}, node by node")


def _plot_rates(
    report: Report,
    path: Path,
    series: list[tuple[str, dict[int, float], dict[str, Any]]],
    title: str,
    mean: float | None = None,
) -> Path | None:
    """Messages per second over time, a step line per (label, counts per second, style);
    ``title`` has ``{per}`` for the bin width; ``mean``, if any, a dashed line."""
    if not series:
        return None
    base = _base_second(report)
    last = max(max(counts) for _, counts, _ in series)
    fig, ax = _figure()
    width = 1
    for label, counts, style in series:
        first = min(counts)
        xs, ys, width = _binned(counts, first, last)
        _step(ax, xs + (first - base), ys, width, label=label, **style)
    if mean:
        ax.axhline(mean, linestyle="--", color="grey", label=f"server mean {mean:,.0f}/s")
    per = "per second" if width == 1 else f"per second (mean over {width} s)"
    ax.set_title(title.format(per=per))
    ax.set_ylabel("messages / s")
    ax.set_ylim(bottom=0)
    _time_axis(ax, base, report.utc)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_connections(report: Report, path: Path) -> Path | None:
    """Concurrent connections over time: the highest count of each second."""
    per_second = report.server.concurrency
    if not per_second:
        return None
    import numpy as np

    base = _base_second(report)
    first, last = min(per_second), max(per_second)
    # A second without events keeps the count the previous second ended with.
    filled = np.zeros(last - first + 1)
    current = 0
    for offset in range(last - first + 1):
        entry = per_second.get(first + offset)
        if entry is None:
            filled[offset] = current
        else:
            filled[offset], current = entry
    xs, ys, width = _binned(
        dict(zip(range(first, last + 1), filled, strict=True)), first, last, how="max"
    )
    fig, ax = _figure()
    _step(ax, xs + (first - base), ys, width, label="concurrent connections")
    peak = report.server.peak_concurrent
    if report.server.peak_time is not None:
        # A marker over the peak, not a line across the plot that hides the series.
        ax.plot(
            [report.server.peak_time - base],
            [peak],
            "v",
            color="black",
            label=f"peak {peak:,} at {(stamp(report.server.peak_time, report.utc) or '')[11:19]}",
        )
    per = "second" if width == 1 else f"{width} s"
    ax.set_title(f"Concurrent connections (highest in each {per})")
    ax.set_ylabel("open connections")
    ax.set_ylim(bottom=0, top=max(peak * 1.1, 1))
    _time_axis(ax, base, report.utc)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_rtt(report: Report, path: Path) -> Path | None:
    """Round-trip histogram (log time axis) and the percentile curve."""
    histogram = report.client.histogram
    count = histogram.get_total_count()
    if not count:
        return None
    import numpy as np

    values, counts = _recorded(histogram)
    fig, (left, right) = _figure(1, 2)
    low, high = min(values), max(values)
    if high <= low * 1.01:
        low, high = low * 0.9, high * 1.1
    left.hist(values, bins=np.geomspace(low, high, 60), weights=counts)
    left.set_xscale("log")
    _ms_ticks(left.xaxis)
    left.set_title(f"Round-trip time histogram ({count:,} replies)")
    left.set_xlabel("round-trip time (ms)")
    left.set_ylabel("replies")
    left.grid(True, alpha=0.3)
    # Percentile curve on the usual "nines" axis: x = 1 / (1 - p).
    nines = min(6.0, math.log10(count)) if count > 1 else 1.0
    wanted = [100 * (1 - 10**-k) for k in np.linspace(0, nines, 120)]
    at = histogram.get_percentile_to_value_dict(wanted)
    ps = sorted(at)
    right.plot([1 / (1 - p / 100) for p in ps], [at[p] / 1000 for p in ps], label="percentile")
    rtt = report.summary["client"]["rtt_ms"]
    for name, p in PERCENTILES.items():
        x = 1 / (1 - p / 100)
        if x <= 10**nines:
            right.plot([x], [rtt[name]], "o", label=f"{_label(name)} {rtt[name]:.3f} ms")
    right.set_xscale("log")
    ticks = [10**k for k in range(int(nines) + 1)]
    right.set_xticks(ticks, [f"{100 * (1 - 1 / t):g}%" for t in ticks])
    right.set_title("Round-trip percentiles")
    right.set_xlabel("percentile")
    right.set_ylabel("round-trip time (ms)")
    if rtt["max"] > 20 * rtt["p50"] > 0:
        # A tail far above the median: a linear axis would flatten p50-p99.
        right.set_yscale("log")
        _ms_ticks(right.yaxis)
    else:
        right.set_ylim(bottom=0)
    right.grid(True, alpha=0.3)
    right.legend(loc="upper left")
    return _save(fig, path)


def plot_rtt_over_time(report: Report, path: Path) -> Path | None:
    """Round-trip percentiles per time slot."""
    rows = report.client.timeline.rows()
    if not rows:
        return None
    base = _base_second(report)
    width = report.client.timeline.width
    xs = [row["start"] - base for row in rows]
    fig, ax = _figure()
    for name in (*PERCENTILES, "max"):
        _step(ax, xs, [row.get(name, math.nan) for row in rows], width, label=_label(name))
    top = max(row["max"] for row in rows)
    median = min(row.get("p50", top) for row in rows)
    if median > 0 and top / median > 50:
        ax.set_yscale("log")
        _ms_ticks(ax.yaxis)
    ax.set_title(f"Round-trip percentiles over time (per {width} s)")
    ax.set_ylabel("round-trip time (ms)")
    _time_axis(ax, base, report.utc)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_bench(rows: list[dict[str, Any]], path: Path) -> Path:
    """Throughput and p99 against the number of connections (closed loop), one line per server.

    chatlog and the seeds' threaded design are drawn bold, side by side; the
    other reference servers thin and dashed.  Points of other modes
    (pipelined, open loop) are not a function of the connection count and
    are left to the bench's table.
    """
    closed = [row for row in rows if row.get("mode", "closed") == "closed"]
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in closed:
        curves.setdefault(str(row["server"]), []).append(row)
    fig, (left, right) = _figure(1, 2)
    for label, points in sorted(curves.items(), key=lambda item: _bench_order(item[0])):
        points.sort(key=operator.itemgetter("connections"))
        xs = [p["connections"] for p in points]
        main = label in ("chatlog", "threaded")
        style = {"linewidth": 2.5 if main else 1.2, "linestyle": "-" if main else "--"}
        left.plot(xs, [p["msgs_per_s"] for p in points], marker="o", label=label, **style)
        right.plot(xs, [p["p99_ms"] for p in points], marker="o", label=label, **style)
    left.set_title("Throughput against connections (closed loop)")
    left.set_ylabel("messages / s")
    left.set_ylim(bottom=0)
    right.set_title("p99 round trip against connections (closed loop)")
    right.set_ylabel("p99 round-trip time (ms)")
    right.set_yscale("log")
    _ms_ticks(right.yaxis)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent connections")
        ax.grid(True, alpha=0.3)
    left.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _bench_order(server: str) -> tuple[int, str]:
    """chatlog first, the threaded design second, the other references after."""
    first = {"chatlog": 0, "threaded": 1}
    return first.get(server, 2), server


def _label(name: str) -> str:
    """A summary key as a legend says it: p999 is p99.9."""
    return "p99.9" if name == "p999" else name


def _recorded(histogram: HdrHistogram) -> tuple[list[float], list[int]]:
    """The histogram's recorded values (ms) and their counts."""
    values, counts = [], []
    for item in histogram.get_recorded_iterator():
        values.append(item.value_iterated_to / 1000)
        counts.append(item.count_added_in_this_iter_step)
    return values, counts


def _base_second(report: Report) -> int:
    """Time zero of the plots: the first second of either log."""
    starts = [t for t in (report.server.first, report.client.first) if t is not None]
    return int(min(starts)) if starts else 0


def _figure(rows: int = 1, cols: int = 1, height: float = 4.5) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height), dpi=100, layout="constrained")
    return fig, fig.subplots(rows, cols)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _binned(
    values: dict[int, float], first: int, last: int, how: str = "mean"
) -> tuple[Any, Any, int]:
    """Per-second values as arrays over [first, last], averaged (or max) over bins
    wide enough to keep a plot under MAX_PLOT_POINTS points; also the bin width."""
    import numpy as np

    width = max(1, math.ceil((last - first + 1) / MAX_PLOT_POINTS))
    bins = (last - first) // width + 1
    seconds = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
    amounts = np.fromiter(values.values(), dtype=np.float64, count=len(values))
    index = (seconds - first) // width
    out = np.zeros(bins)
    if how == "max":
        np.maximum.at(out, index, amounts)
    else:
        np.add.at(out, index, amounts)
        out /= width
    return np.arange(bins) * width, out, width


def _step(ax: Any, xs: Any, ys: Any, width: float, label: str, **style: Any) -> None:
    """A step line whose last step, like the others, lasts its whole bin."""
    xs, ys = list(xs), list(ys)
    ax.step([*xs, xs[-1] + width], [*ys, ys[-1]], where="post", label=label, **style)


def _ms_ticks(axis: Any) -> None:
    """A log axis's ticks as times: ``1 ms``, ``0.1 ms``, not ``10^0``."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g} ms"))


def _time_axis(ax: Any, base: int, utc: bool) -> None:
    zone = "UTC" if utc else "local time"
    ax.set_xlabel(f"time since {(stamp(base, utc) or '')[:19]} {zone} (s)")
    ax.grid(True, alpha=0.3)
