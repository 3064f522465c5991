"""The command line: ``python -m chatlog.report SERVER_LOG [CLIENT_LOG ...] [-o DIR]``.

Usage::

    python -m chatlog.report SERVER_LOG [CLIENT_LOG ...] [-o DIR] [--utc] [--bench FILE] [--top N]

Prints the summary table on stdout and writes ``summary.json``, the plots
and ``report.html`` into ``DIR``.  HdrHistogram interval logs (``.hlog``,
from the client's ``--hlog``) may be given among the logs: they are told
apart by their first line and add latency against offered load and
percentiles over time (:mod:`chatlog.report.hlogs`).  A missing log, an
unreadable interval log or a bad ``--bench`` file is a usage error (exit
status 2) before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report on ``argv`` (the command line's); return the exit status."""
    args = parse_args(argv)
    missing = [path for path in args.logs if not Path(path).is_file()]
    if missing:
        print(f"chatlog.report: no such file: {', '.join(missing)}", file=sys.stderr)
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
    written = write_report(report, args.output, bench, hlogs or None)
    if logs or not hlogs:
        print_summary(report.summary)
    if hlogs:
        print_hlogs(hlogs)
    print(f"wrote {written['summary']} and {written['html']}")
    return 0
