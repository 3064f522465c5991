"""What the bench prints and writes: the table, rst, JSON and the plot."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def loadavg() -> str:
    """The machine's load average (1, 5, 15 min), to say how busy it was around a run."""
    try:
        with open("/proc/loadavg") as file:
            one, five, fifteen = file.read().split()[:3]
    except (OSError, ValueError):
        return "unknown"
    return f"{one} {five} {fifteen}"


def machine_line(info: dict[str, Any]) -> str:
    return f"{info['nproc']} x {info['cpu']}, Linux {info['kernel']}, Python {info['python']}"


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_name(row: Row) -> str:
    if row["mode"] == "open":
        return f"open {row['rate']}/s x{row['connections']}"
    if row["pipeline"] > 1:
        return f"{row['pipeline']} in flight x{row['connections']}"
    return f"closed x{row['connections']}"


def _find(
    rows: Sequence[Row], server: str, mode: str, connections: int, pipeline: int, rate: int = 0
) -> Row | None:
    for row in rows:
        if (row["server"], row["mode"], row["connections"], row["pipeline"], row["rate"]) == (
            server, mode, connections, pipeline, rate,
        ):  # fmt: skip
            return row
    return None


def chatlog_ratio(rows: Sequence[Row], row: Row) -> float | None:
    """chatlog's msgs/s divided by this row's, at the same load (> 1: chatlog is faster)."""
    mine = _find(rows, "chatlog", row["mode"], row["connections"], row["pipeline"], row["rate"])
    if mine is None or not row["msgs_per_s"]:
        return None
    return float(mine["msgs_per_s"]) / float(row["msgs_per_s"])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = ["server", "load", "msgs/s", "p50 ms", "p99 ms", "CPU µs/msg", "chatlog ×", "loadgen CPU"]


def table_cells(rows: Sequence[Row]) -> list[list[str]]:
    cells = []
    for row in rows:
        ratio = chatlog_ratio(rows, row)
        flag = (" (!)" if row.get("loadgen_saturated") else "") + (
            " (c)" if row.get("contended") else ""
        )
        cells.append(
            [
                row["server"],
                load_name(row),
                _fmt(row["msgs_per_s"], ",.0f"),
                _fmt(row["p50_ms"], ".3f"),
                _fmt(row["p99_ms"], ".3f"),
                _fmt(row["cpu_us_per_msg"], ".2f"),
                _fmt(ratio, ".2f"),
                _fmt(row["loadgen_cpu_pct"], ".0f") + "%" + flag,
            ]
        )
    return cells


def aligned(head: Sequence[str], cells: Sequence[Sequence[str]], left: int) -> str:
    """A plain text table: the first ``left`` columns flush left, the numbers flush right."""
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    lines = []
    for i, line in enumerate([head, *cells]):
        lines.append(
            "  ".join(
                cell.ljust(width) if j < left else cell.rjust(width)
                for j, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def text_table(rows: Sequence[Row]) -> str:
    return aligned(COLUMNS, table_cells(rows), left=2)


def rst_table(rows: Sequence[Row]) -> str:
    cells = table_cells(rows)
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip(), rule]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    out.append(rule)
    return "\n".join(out)


def header(info: dict[str, Any], date: str, describe_run: str) -> str:
    return f"chatlog bench, {date}\nmachine: {machine_line(info)}\n{describe_run}"


def notes(rows: Sequence[Row], point: Callable[[Row], str] = load_name) -> list[str]:
    """The flags' meanings and each row's trouble; ``point`` names a row's load point."""
    out = []
    saturated = [f"{r['server']} {point(r)}" for r in rows if r.get("loadgen_saturated")]
    if saturated:
        out.append(
            "(!) the load generator used >= 90% of its core: these rows measure it as much "
            "as the server: " + "; ".join(saturated)
        )
    contended = [
        f"{r['server']} {point(r)} ({r['other_cpu_pct']:.0f}%)" for r in rows if r.get("contended")
    ]
    if contended:
        out.append(
            "(c) other processes took > 10% of a pinned core (unpinned: of one CPU, "
            "machine-wide) during some runs even after retries: rerun on a quiet machine: "
            + "; ".join(contended)
        )
    for row in rows:
        problems = []
        if row.get("errors"):
            problems.append(f"{row['errors']} ERROR replies")
        if row.get("connect_failed"):
            problems.append(f"{row['connect_failed']} connections failed")
        if row.get("closed_early"):
            problems.append(f"{row['closed_early']} connections closed by the server")
        if row.get("dropped"):
            problems.append(f"{row['dropped']} open-loop sends dropped (too many in flight)")
        if problems:
            out.append(f"{row['server']} {point(row)}: " + ", ".join(problems))
    return out


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """Throughput and p99 against connections (closed loop), one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = list(dict.fromkeys(row["server"] for row in rows))
    for name in names:
        points = sorted(
            (r["connections"], r["msgs_per_s"], r["p99_ms"])
            for r in rows
            if r["server"] == name and r["mode"] == "closed"
        )
        if not points:
            continue
        xs = [p[0] for p in points]
        style = "-" if name.startswith("chatlog") else "--"
        width = 2.5 if name == "chatlog" else 1.2
        left.plot(xs, [p[1] for p in points], style, marker="o", linewidth=width, label=name)
        right.plot(xs, [p[2] for p in points], style, marker="o", linewidth=width, label=name)
    # Points measured while other processes took CPU from a pinned core.
    shaky = [r for r in rows if r["mode"] == "closed" and r.get("contended")]
    if shaky:
        xs = [r["connections"] for r in shaky]
        left.scatter(
            xs,
            [r["msgs_per_s"] for r in shaky],
            s=70,
            facecolors="none",
            edgecolors="black",
            zorder=5,
            label="contended run",
        )
        right.scatter(
            xs, [r["p99_ms"] for r in shaky], s=70, facecolors="none", edgecolors="black", zorder=5
        )
    for axis, ylabel in ((left, "messages / s"), (right, "p99 round trip (ms)")):
        axis.set_xscale("log")
        axis.set_xlabel("connections (closed loop, 1 in flight each)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
