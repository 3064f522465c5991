"""The command line: ``python -m chatlog.report SERVER_LOG [CLIENT_LOG ...] [-o DIR]``.

Usage::

    python -m chatlog.report SERVER_LOG [CLIENT_LOG ...] [-o DIR] [--utc] [--bench FILE] [--top N]

Prints the summary table on stdout and writes ``summary.json``, the plots
and ``report.html`` into ``DIR``.  HdrHistogram interval logs (``.hlog``,
from the client's ``--hlog``) may be given among the logs: they are told
apart by their first line and add latency against offered load and
percentiles over time (:mod:`chatlog.report.hlogs`).  A missing log (or a
directory), an unreadable interval log, a bad ``--bench`` file or an output
directory that cannot be written is a usage error (exit status 2) before
anything is read.

It says what it took each file for (server or client log, its format, how
many records), warns on stderr about every file with lines that are not
records of its format (a log another format was appended to, a file that
is not a log) and about server and client logs that do not overlap in time
(two different runs), and exits 1, writing nothing, when not one record of
the logs it was given could be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatlog.report.console import print_hlogs, print_summary
from chatlog.report.hlogs import is_hlog, load_hlogs
from chatlog.report.inputs import load_bench
from chatlog.report.nodes import SILENT_S
from chatlog.report.outputs import write_report
from chatlog.report.summary import build_report

DEFAULT_OUTPUT = "report"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; ``argv`` None means the command line's."""
    parser = argparse.ArgumentParser(
        prog="python -m chatlog.report",
        description="Summarise chatlog server and client logs: a table, summary.json, "
        "PNG plots and report.html.",
    )
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="server logs and client logs, any format, in any order "
        "(rotated and per-worker logs may be listed together), and the client's "
        "interval logs (--hlog)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help="where to write summary.json, the plots and report.html (default: %(default)s)",
    )
    parser.add_argument(
        "--utc",
        action="store_true",
        help="text-format timestamps are UTC (the server ran with --utc)",
    )
    parser.add_argument(
        "--bench",
        metavar="FILE",
        help="bench results (JSON rows from python -m chatlog.bench) to plot",
    )
    parser.add_argument(
        "--health-check",
        metavar="LINE",
        help="the line a load balancer's health check sends (contrib/fleet's HAProxy: "
        "haproxy-check): the per-node view counts those apart from clients' messages",
    )
    parser.add_argument(
        "--silent-after",
        type=float,
        default=SILENT_S,
        metavar="S",
        help="a node whose records end this many seconds before the fleet's, without a "
        "Server Stopped, went silent (default: %(default)s)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="how many clients to list (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What makes the command line unusable before reading anything, or None."""
    for path in args.logs:
        if Path(path).is_dir():
            return f"{path} is a directory, not a log (give the log files in it)"
        if not Path(path).exists():
            return f"no such file: {path}"
        if not Path(path).is_file():
            return f"{path} is not a regular file"
    # The output directory, or the nearest folder that would hold it, must
    # take files: checked without creating anything.
    out = Path(args.output).absolute()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        return f"cannot write the report into {args.output}: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write the report into {args.output}: {existing} is not writable"
    return None


def describe_files(summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what each file was taken for, one line each; warnings for stderr)."""
    taken, warnings = [], []
    for row in summary["files"]:
        if row["format"] is None:
            taken.append(f"{row['path']}: not a chatlog log (no line is a record)")
            continue
        # A file row's "records" counts its lines, "unparsed" those that are not records.
        lines = row["records"]
        taken.append(
            f"{row['path']}: {row['role']} log, {row['format']} format, "
            f"{lines - row['unparsed']:,} records"
            + (f", {row['unparsed']:,} unparsed" if row["unparsed"] else "")
            + (f", {row['torn']:,} torn" if row["torn"] else "")
        )
        if row["unparsed"]:
            warnings.append(
                f"warning: {row['path']}: {row['unparsed']:,} of {lines:,} lines are not "
                f"{row['format']} records (another format appended, or not a chatlog log?); "
                "they are counted as unparsed, in nothing else"
            )
    client = summary["client"]
    server = summary["time"]
    if (
        server["first"]
        and client["first"]
        and (client["last"] < server["first"] or client["first"] > server["last"])
    ):
        warnings.append(
            f"warning: the client logs ({client['first'][:19]} to {client['last'][:19]}) and the "
            f"server logs ({server['first'][:19]} to {server['last'][:19]}) do not overlap in "
            "time: two different runs?"
        )
    return taken, warnings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report on ``argv`` (the command line's); return the exit status."""
    args = parse_args(argv)
    problem = _usage_problem(args)
    if problem is not None:
        print(f"chatlog.report: {problem}", file=sys.stderr)
        return 2
    try:
        bench = load_bench(args.bench) if args.bench else None
    except (OSError, ValueError) as e:
        print(f"chatlog.report: --bench: {e}", file=sys.stderr)
        return 2
    hlog_paths = [path for path in args.logs if is_hlog(path)]
    try:
        hlogs = load_hlogs(hlog_paths)
    except (OSError, ValueError) as e:
        print(f"chatlog.report: {e}", file=sys.stderr)
        return 2
    logs = [path for path in args.logs if path not in hlog_paths]
    health_check = args.health_check.encode() if args.health_check is not None else None
    report = build_report(
        logs,
        utc=args.utc,
        top=args.top,
        health_check=health_check,
        silent_after=args.silent_after,
    )
    taken, warnings = describe_files(report.summary)
    if logs and all(row["format"] is None for row in report.summary["files"]):
        for line in taken:
            print(f"chatlog.report: {line}", file=sys.stderr)
        print(
            "chatlog.report: nothing to report: no line of these files is a record", file=sys.stderr
        )
        return 1
    try:
        written = write_report(report, args.output, bench, hlogs or None)
    except OSError as error:
        # What access() could not foresee (root, a read-only mount, /proc).
        print(
            f"chatlog.report: cannot write the report into {args.output}: {error}", file=sys.stderr
        )
        return 1
    for line in taken:
        print(f"read {line}")
    if logs or not hlogs:
        print_summary(report.summary)
    for warning in warnings:
        print(f"chatlog.report: {warning}", file=sys.stderr)
    if hlogs:
        print_hlogs(hlogs)
    print(f"wrote {written['summary']} and {written['html']}")
    return 0
