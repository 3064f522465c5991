"""``python -m chatlog.client``: talk to a chatlog server, or measure it under load.

Everyday use sends lines and prints each reply with its round-trip time::

    python -m chatlog.client --host 127.0.0.1 --port 5000 "Hello, Server!" "second"

Load options (``--connections``, ``--messages``/``--duration``, ``--pipeline``,
``--rate``, ``--procs``, ...) drive many connections and print a summary
(``--json``: one JSON object with the figures); ``--sweep`` finds the highest
rate a server takes within an SLO.  The pieces:

- :mod:`chatlog.client.options`: the command line;
- :mod:`chatlog.client.session`: the everyday conversation;
- :mod:`chatlog.client.plan`: what a load run sends and expects;
- :mod:`chatlog.client.load` and :mod:`chatlog.client.loadconn`: load runs,
  closed and open loop, and their connections;
- :mod:`chatlog.client.schedule`: the open loop's schedule, and how late it was kept;
- :mod:`chatlog.client.runner`: endpoints (TCP, TLS), connecting, progress bar;
- :mod:`chatlog.client.procs`: ``--procs``, several processes, one histogram;
- :mod:`chatlog.client.sweep`: ``--sweep``, steps of rising rate and a bisection;
- :mod:`chatlog.client.stats`: the HdrHistogram and the summary;
- :mod:`chatlog.client.display`: the header line, the progress bar, the summary's layout;
- :mod:`chatlog.client.intervals`: ``--hlog`` and ``--interval``, interval by interval;
- :mod:`chatlog.client.interrupt`: Ctrl-C ends a run with its partial figures;
- :mod:`chatlog.client.clientlog` and :mod:`chatlog.client.logwriter`:
  ``--logfile``, in the server's formats, written off the measuring loop.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet.defer import Deferred

from chatlog.client.display import header, terminal_width
from chatlog.client.interrupt import Interrupts
from chatlog.client.options import is_load, parse
from chatlog.client.runner import ClientError
from chatlog.client.stats import Summary, percentile_spectrum

if TYPE_CHECKING:
    from chatlog.client.sweep import SweepResult

PROG = "chatlog.client"


#: The exit status of an interrupted run (128 + SIGINT, as shells report it).
INTERRUPTED = 130


async def run(
    reactor: Any,
    argv: Sequence[str],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    interrupts: Interrupts | None = None,
) -> int:
    """Do what ``argv`` asks; return the exit status (1 when anything went wrong)."""
    options = parse(argv)
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    interrupts = interrupts if interrupts is not None else Interrupts(reactor)
    summary: Summary
    try:
        if options.sweep:
            from chatlog.client.sweep import run_sweep

            return report_sweep(await run_sweep(reactor, options, interrupts), options, stdout)
        if is_load(options) and not options.worker:
            # As wrk's "Running 10s test @ ...": on stderr, so --json stays clean.
            stderr.write(header(options) + "\n")
            stderr.flush()
        if options.procs > 1:
            from chatlog.client.procs import run_procs

            summary = await run_procs(reactor, options, interrupts=interrupts)
        elif is_load(options):
            from chatlog.client.runner import run_load

            summary = await run_load(reactor, options, interrupts=interrupts)
        else:
            from chatlog.client.session import converse

            summary = await converse(
                reactor, options, stdin=stdin, stdout=stdout, interrupts=interrupts
            )
    except ClientError as error:
        stderr.write(f"{PROG}: {error}\n")
        return 1
    if options.json:
        data = summary.to_json()
        if options.percentiles:
            data["percentile_distribution"] = percentile_spectrum(summary.histogram)
        stdout.write(json.dumps(data) + "\n")
    elif is_load(options):
        stdout.write(summary.text(terminal_width(stdout)) + "\n")
        if options.percentiles:
            stdout.write("\nround trips, ms (hdrh's StdDeviation is in us):\n")
            stdout.write(percentile_spectrum(summary.histogram))
    stdout.flush()
    if options.worker:
        return 0  # the parent reads the problems from the JSON and reports them
    if summary.interrupted:
        unanswered = f": {summary.unanswered} unanswered" if summary.unanswered else ""
        stderr.write(f"{PROG}: interrupted{unanswered}\n")
        return INTERRUPTED
    if summary.problems:
        # One line: the first problem; --json lists the first few.
        more = " (and more: see --json)" if len(summary.problems) > 1 else ""
        stderr.write(f"{PROG}: {summary.problems[0]}{more}\n")
    if summary.errors:
        if not summary.problems:
            stderr.write(f"{PROG}: {summary.errors} messages got no proper reply\n")
        return 1
    return 1 if summary.problems or summary.refused else 0


def report_sweep(result: SweepResult, options: Any, stdout: TextIO) -> int:
    """Print a sweep's table (or JSON); 0 when it found an answer."""
    stdout.write((result.json_line() if options.json else result.text()) + "\n")
    stdout.flush()
    if result.interrupted:
        return INTERRUPTED
    return 0 if result.max_rate is not None else 1


def main(reactor: Any, argv: Sequence[str] | None = None) -> Deferred[None]:
    """The ``task.react`` entry: exits with :func:`run`'s status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    # Parse first, so that --help and usage errors exit before any work.
    options = parse(arguments)
    # A --procs worker gets Ctrl-C from the terminal and from its parent: both gently.
    interrupts = Interrupts(reactor, forceful_second=not options.worker)
    interrupts.install()

    async def body() -> None:
        try:
            code = await run(reactor, arguments, interrupts=interrupts)
        finally:
            interrupts.uninstall()
        if code:
            raise SystemExit(code)

    return Deferred.fromCoroutine(body())
