"""``--sizes`` and ``--formats``: bytes per second as well as lines, at every line size and format.

A default run measures 16-byte lines, where what a server costs per message
hides what it costs per byte.  With ``--sizes 16,128,1024,16384`` every load
point is run at each line size (newline included), and with ``--formats
event,dash,json`` chatlog runs once per log format (``chatlog``,
``chatlog-dash``, ``chatlog-json``) beside the peers that log nothing (bare
Twisted, uvloop, C epoll).  This module holds what that mode adds: the
option parsing, MiB/s (the request bytes answered, and by chatlog logged,
per second), the table, the targets of issue 15 and the plot of MiB/s
against line size.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatlog.bench import output, targets

Row = dict[str, Any]

#: The chatlog server that logs in each format.
FORMATS = {"event": "chatlog", "dash": "chatlog-dash", "json": "chatlog-json"}
DEFAULT_SIZES = [16, 128, 1024, 16384]
DEFAULT_FORMATS = ["event", "dash", "json"]
#: The reference servers a size run puts beside chatlog (none logs).
PEERS = ["twisted", "uvloop", "c-epoll"]
#: chatlog's default --max-line: a longer line is an error, not a load.
MAX_SIZE = 65536
MIB = 1 << 20


def parse_sizes(text: str) -> list[int]:
    """``16,128,1k,16K`` -> [16, 128, 1024, 16384]: bytes per line, newline included."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = 1024 if part.endswith("k") else 1
        try:
            size = int(part.removesuffix("k")) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size in bytes: {part!r}") from None
        if not 2 <= size <= MAX_SIZE:
            raise argparse.ArgumentTypeError(
                f"a line is 2 to {MAX_SIZE} bytes, newline included: {size}"
            )
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError("no size given")
    return list(dict.fromkeys(sizes))


def parse_formats(text: str) -> list[str]:
    """``event,json`` -> ["event", "json"], each a format chatlog logs in."""
    formats = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"formats are {', '.join(FORMATS)}; got {', '.join(unknown) or 'none'}"
        )
    return list(dict.fromkeys(formats))


def default_servers(formats: Sequence[str]) -> str:
    """chatlog once per format, then the peers."""
    return ",".join([FORMATS[name] for name in formats] + PEERS)


def size_label(size: int) -> str:
    """16 -> ``16 B``, 1024 -> ``1 KiB``, 1536 -> ``1536 B``."""
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def mib_per_s(row: Row) -> float | None:
    """The request bytes answered per second (newlines included), in MiB/s."""
    if row.get("msgs_per_s") is None:
        return None
    return float(row["msgs_per_s"]) * int(row["size"]) / MIB


def _same_point(row: Row, other: Row) -> bool:
    keys = ("size", "mode", "connections", "pipeline", "rate")
    return all(row.get(key) == other.get(key) for key in keys)


def over_chatlog(rows: Sequence[Row], row: Row) -> float | None:
    """This row's msgs/s over chatlog's (event format) at the same size and load."""
    event = next((r for r in rows if r["server"] == "chatlog" and _same_point(r, row)), None)
    if event is None or not event.get("msgs_per_s") or row.get("msgs_per_s") is None:
        return None
    return float(row["msgs_per_s"]) / float(event["msgs_per_s"])


COLUMNS = [
    "size",
    "load",
    "server",
    "msgs/s",
    "MiB/s",
    "p50 ms",
    "p99 ms",
    "CPU µs/msg",
    "÷ chatlog",
    "loadgen CPU",
]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ordered(rows: Sequence[Row]) -> list[Row]:
    """By line size, then load (closed first), then servers in the order they ran."""
    names = {name: i for i, name in enumerate(dict.fromkeys(r["server"] for r in rows))}
    loads = {"closed": 0, "pipelined": 1, "open": 2}
    return sorted(
        rows,
        key=lambda r: (
            r["size"],
            loads.get(r["mode"], 3),
            r["connections"],
            r["pipeline"],
            r["rate"],
            names[r["server"]],
        ),
    )


def table_cells(rows: Sequence[Row]) -> list[list[str]]:
    cells = []
    for row in ordered(rows):
        flag = (" (!)" if row.get("loadgen_saturated") else "") + (
            " (c)" if row.get("contended") else ""
        )
        cells.append(
            [
                size_label(row["size"]),
                output.load_name(row),
                row["server"],
                _fmt(row["msgs_per_s"], ",.0f"),
                _fmt(mib_per_s(row), ",.1f"),
                _fmt(row["p50_ms"], ".3f"),
                _fmt(row["p99_ms"], ".3f"),
                _fmt(row["cpu_us_per_msg"], ".2f"),
                _fmt(over_chatlog(rows, row), ".2f"),
                _fmt(row["loadgen_cpu_pct"], ".0f") + "%" + flag,
            ]
        )
    return cells


def text_table(rows: Sequence[Row]) -> str:
    return output.aligned(COLUMNS, table_cells(rows), left=3)


def rst_table(rows: Sequence[Row]) -> str:
    cells = table_cells(rows)
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.append(rule)
    return "\n".join(line.rstrip() for line in lines)


def point_name(row: Row) -> str:
    """``1 KiB, 16 in flight x10``: a row's point in the notes."""
    return f"{size_label(row['size'])}, {output.load_name(row)}"


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeTarget:
    """At one line size: ``server``'s ``measure`` over ``peer``'s ``op`` ``goal``.

    With no ``peer`` the goal is a figure of its own (``mib_per_s``: MiB/s).
    """

    size: int
    target: targets.Target  # the load, the servers and the goal

    @property
    def name(self) -> str:
        t = self.target
        if not t.peer:
            return f"{size_label(self.size)}, {t.load}: {t.server} MiB/s {t.op} {t.goal:g}"
        return f"{size_label(self.size)}, {t.name}"


@dataclass(frozen=True)
class SizeVerdict:
    target: SizeTarget
    value: float | None
    met: bool | None
    why: str = ""


def size_targets(sizes: Sequence[int], formats: Sequence[str]) -> list[SizeTarget]:
    """Issue 15's targets that a run of these sizes and formats can judge."""
    Target = targets.Target
    out = []
    if 1024 in sizes and "event" in formats:
        out.append(SizeTarget(1024, Target("pipelined", 10, 16, "chatlog", "", "mib_per_s", ">=", 500.0)))  # fmt: skip
    for size in sizes:
        for name in formats:
            if name != "event" and "event" in formats:
                for mode, depth in (("closed", 1), ("pipelined", 16)):
                    conns = 100 if mode == "closed" else 10
                    out.append(SizeTarget(size, Target(mode, conns, depth, FORMATS[name], "chatlog", "msgs_per_s", ">=", 0.9)))  # fmt: skip
    if 16 in sizes and "event" in formats:
        out.append(SizeTarget(16, Target("closed", 100, 1, "chatlog", "uvloop", "msgs_per_s", ">=", 1.0)))  # fmt: skip
        out.append(SizeTarget(16, Target("closed", 100, 1, "chatlog", "c-epoll", "cpu_us_per_msg", "<=", 1.5)))  # fmt: skip
    return out


def judge_one(rows: Sequence[Row], goal: SizeTarget) -> SizeVerdict:
    """Judged as :func:`chatlog.bench.targets.judge_one` judges, on the rows of one size."""
    mine = [row for row in rows if row.get("size") == goal.size]
    t = goal.target
    if t.peer:
        verdict = targets.judge_one(mine, t)
        return SizeVerdict(goal, verdict.value, verdict.met, verdict.why)
    row = next(
        (
            r
            for r in mine
            if (r["server"], r["mode"], r["connections"], r["pipeline"], r.get("rate", 0))
            == (t.server, t.mode, t.connections, t.pipeline, 0)
        ),
        None,
    )
    value = None if row is None else mib_per_s(row)
    if row is None or value is None:
        return SizeVerdict(goal, None, None, f"not measured: no {t.server} {t.load} figure")
    if row.get("loadgen_saturated"):
        return SizeVerdict(goal, value, None, "not judged: it measured the load generator (!)")
    if row.get("contended"):
        return SizeVerdict(goal, value, None, "not judged: it was contended (c)")
    return SizeVerdict(goal, value, t.met_by(value))


def judge(rows: Sequence[Row], goals: Sequence[SizeTarget]) -> list[SizeVerdict]:
    return [judge_one(rows, goal) for goal in goals]


def verdicts_text(verdicts: Sequence[SizeVerdict]) -> str:
    width = max((len(v.target.name) for v in verdicts), default=0)
    lines = []
    for v in verdicts:
        value = "-" if v.value is None else f"{v.value:.3f}" if v.value < 100 else f"{v.value:.0f}"
        word = v.why if v.met is None else "met" if v.met else "SHORT"
        lines.append(f"  {v.target.name:{width}}  {value:>6}  {word}")
    return "\n".join(lines)


def check_line(verdicts: Sequence[SizeVerdict]) -> str:
    """``2 of 20 judged SHORT: ...`` or ``all 20 judged met``, as ``--check`` says it."""
    judged = [v for v in verdicts if v.met is not None]
    missed = [v for v in judged if not v.met]
    if missed:
        names = "; ".join(f"{v.target.name} (measured {v.value:.3f})" for v in missed)
        return f"{len(missed)} of {len(judged)} judged SHORT: {names}"
    return f"all {len(judged)} judged met ({len(verdicts) - len(judged)} not judged)"


# -- the plot ----------------------------------------------------------------------------------


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """MiB/s against line size, one panel per load, one line per server (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(dict.fromkeys((r["mode"], r["connections"], r["pipeline"]) for r in rows))
    loads = [load for load in loads if load[0] != "open"]
    if not loads:
        return
    sizes = sorted({int(r["size"]) for r in rows})
    names = list(dict.fromkeys(r["server"] for r in ordered(rows)))
    fig, axes = plt.subplots(1, len(loads), figsize=(6.2 * len(loads), 5.2), squeeze=False)
    for axis, (mode, conns, depth) in zip(axes[0], loads, strict=True):
        here = [
            r for r in rows if (r["mode"], r["connections"], r["pipeline"]) == (mode, conns, depth)
        ]
        for name in names:
            points = sorted(
                (r["size"], mib_per_s(r)) for r in here if r["server"] == name and r["msgs_per_s"]
            )
            if not points:
                continue
            ours = name.startswith("chatlog")
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "-" if ours else "--",
                marker="o" if ours else "s",
                linewidth=2.4 if name == "chatlog" else 1.6 if ours else 1.2,
                markersize=5,
                label=name + ("" if ours else " (no log)"),
            )
        shaky = [r for r in here if r.get("contended") and r["msgs_per_s"]]
        if shaky:
            axis.scatter(
                [r["size"] for r in shaky],
                [mib_per_s(r) for r in shaky],
                s=90,
                facecolors="none",
                edgecolors="black",
                zorder=5,
                label="contended run",
            )
        busy = [r for r in here if r.get("loadgen_saturated") and r["msgs_per_s"]]
        if busy:
            axis.scatter(
                [r["size"] for r in busy],
                [mib_per_s(r) for r in busy],
                s=60,
                marker="x",
                color="black",
                zorder=6,
                label="load generator >= 90% busy (!)",
            )
        if mode == "pipelined" and 1024 in sizes:
            axis.axhline(500, color="grey", linestyle=":", linewidth=1)
            axis.annotate("target at 1 KiB: 500 MiB/s", (sizes[0], 500), fontsize=7, va="top",
                          xytext=(0, -3), textcoords="offset points", color="grey")  # fmt: skip
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(sizes, [size_label(s) for s in sizes])
        axis.minorticks_off()
        axis.set_xlim(sizes[0] / 1.5, sizes[-1] * 1.5)
        axis.set_xlabel("line size (bytes per message, newline included)")
        axis.set_ylabel("MiB/s of messages answered (chatlog: and logged)")
        load = {"mode": mode, "connections": conns, "pipeline": depth, "rate": 0}
        axis.set_title(output.load_name(load), fontsize=10)
        axis.grid(True, which="major", alpha=0.3)
    top = max((mib_per_s(r) or 0.0) for r in rows)
    bottom = min((mib_per_s(r) or math.inf) for r in rows)
    if math.isfinite(bottom) and top > 0:
        for axis in axes[0]:
            axis.set_ylim(bottom / 1.6, top * 1.6)
    # One legend for both panels, below them, where it hides no point.
    handles: dict[str, Any] = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
