"""What a load run shows a person: its header line, progress bar and summary layout.

- :func:`header`: one line on stderr before a load run, as wrk's ``Running 10s
  test @ ...``: target, connections, mode;
- :class:`ProgressBar`: a bar on stderr (a terminal) while it runs, from a
  run's ticks or, with ``--procs``, from the workers' intervals;
- :func:`field_lines`: a summary line broken between its fields, never inside
  a number, to fit the terminal.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import TYPE_CHECKING, Any, TextIO

from chatlog.wire import format_address

if TYPE_CHECKING:
    from chatlog.client.load import LoadRun

#: Width of a summary line's label (``rtt ms``), and the indent of its continuations.
LABEL = 12


def header(options: argparse.Namespace) -> str:
    """``Running 10 s @ 127.0.0.1:5000: 10 connections, closed loop (pipeline 1)``."""
    if options.messages is not None:
        what = f"{options.messages:,} message{'s' if options.messages != 1 else ''} per connection"
    else:
        what = f"{options.duration:g} s"
    target = format_address(options.host, options.port) + (" (TLS)" if options.tls else "")
    connections = (
        "1 connection" if options.connections == 1 else f"{options.connections:,} connections"
    )
    if options.rate is not None:
        mode = f"open loop at {options.rate:,.0f} msgs/s"
    else:
        mode = f"closed loop (pipeline {options.pipeline})"
    parts = [connections, mode]
    if options.warmup:
        parts.append(f"after {options.warmup:g} s of warmup")
    if options.procs > 1:
        parts.append(f"{options.procs} processes")
    return f"Running {what} @ {target}: " + ", ".join(parts)


def terminal_width(stream: TextIO) -> int | None:
    """Columns of the terminal ``stream`` is (``COLUMNS`` first); None if not a terminal."""
    try:
        if not stream.isatty():
            return None
    except ValueError:  # closed
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (OSError, ValueError, AttributeError):
        return None


def field_lines(label: str, fields: list[str], width: int | None = None) -> list[str]:
    """``label`` then ``fields`` two spaces apart; with ``width``, broken between fields.

    Continuation lines are indented under the first field; a field longer than
    the line (a sentence) is broken between its words.
    """
    room = None if width is None else max(width - LABEL, 20)
    pieces: list[str] = []
    for field in fields:
        if room is not None and len(field) > room:
            pieces += textwrap.wrap(field, room, break_long_words=False, break_on_hyphens=False)
        else:
            pieces.append(field)
    lines = [f"{label:<{LABEL - 1}} " + pieces[0]]
    for piece in pieces[1:]:
        if width is not None and len(lines[-1]) + 2 + len(piece) > width:
            lines.append(" " * LABEL + piece)
        else:
            lines[-1] += "  " + piece
    return lines


def progress_figures(done: int, rate: float, warming: bool) -> str:
    """The bar's words: ``warming up`` during ``--warmup`` (nothing is counted yet)."""
    if warming:
        return "warming up"
    return f"{done:,} msgs  {rate:,.0f} msgs/s"


class ProgressBar:
    """A rich progress bar on stderr: by time (``--duration``) or by messages."""

    def __init__(self, total: float, by_time: bool, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.by_time = by_time
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[figures]}"),
            TimeElapsedColumn(),
            console=console if console is not None else Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("load", total=total, figures="")
        self.progress.start()
        self._last = (0, 0.0)

    @classmethod
    def for_options(cls, options: argparse.Namespace, console: Any = None) -> ProgressBar:
        by_time = options.messages is None
        total = (
            options.warmup + (options.duration or 0.0)
            if by_time
            else float(options.messages or 0) * options.connections
        )
        return cls(total, by_time, console)

    def show(self, elapsed: float, done: int, warming: bool) -> None:
        """``elapsed`` seconds since the start (warmup included), ``done`` counted replies."""
        last_done, last_elapsed = self._last
        span = elapsed - last_elapsed
        rate = (done - last_done) / span if last_elapsed and span > 0 else 0.0
        self._last = (done, elapsed)
        self.progress.update(
            self.task,
            completed=elapsed if self.by_time else done,
            figures=progress_figures(done, rate, warming),
            description="warmup" if warming else "load",
        )

    def update(self, run: LoadRun) -> None:
        """A run's tick: its counted replies so far."""
        now = run.now_ns()
        self.show((now - run.start_ns) / 1e9, run.completed(), now < run.measure_from)

    def stop(self) -> None:
        self.progress.stop()
