"""The summary as a table on the terminal (``rich``), the first unparsed records, and
the interval logs' load points."""

from __future__ import annotations

import sys
from typing import Any

from chatlog.report.nodes import NODE_HEADERS, node_rows, silent_warnings
from chatlog.report.text import HLOG_HEADERS, fmt, hlog_answer, hlog_rows, summary_rows


def print_summary(summary: dict[str, Any], out: Any = None) -> None:
    """The summary as a table on ``out`` (stdout)."""
    # Imported when used, like matplotlib in the plots: build_report alone needs neither.
    from rich.console import Console
    from rich.table import Table

    table = Table(title="chatlog report")
    table.add_column("section", style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    previous = None
    for section, what, value in summary_rows(summary):
        # A section's name only on its first row: the table reads as groups.
        table.add_row(section if section != previous else "", what, value)
        previous = section
    # A fixed width, so the table looks the same in a terminal and in a pipe.
    console = Console(file=out or sys.stdout, width=100)
    console.print(table)
    if summary.get("nodes"):
        nodes = Table(title="nodes")
        for header in NODE_HEADERS:
            nodes.add_column(header, justify="left" if header in ("node", "ended") else "right")
        for row in node_rows(summary["nodes"]):
            nodes.add_row(*(fmt(value) for value in row))
        console.print(nodes)
        for warning in silent_warnings(summary["nodes"]):
            console.print(warning, markup=False, highlight=False, soft_wrap=True)
    for example in summary["unparsed"]["examples"][:3]:
        console.print(
            f"unparsed {example['file']}:{example['line']}: {example['text']!r}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def print_hlogs(files: list[dict[str, Any]], out: Any = None) -> None:
    """Each interval log: its load points (a sweep's steps) as a table, and its answer."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out or sys.stdout, width=100)
    for file in files:
        if file["steps"]:
            table = Table(title=f"interval log {file['path']}")
            for header in HLOG_HEADERS:
                table.add_column(header, justify="left" if header == "verdict" else "right")
            for row in hlog_rows(file):
                table.add_row(*(fmt(value) for value in row))
            console.print(table)
        console.print(hlog_answer(file), markup=False, highlight=False, soft_wrap=True)
