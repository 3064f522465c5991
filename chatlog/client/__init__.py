"""``python -m chatlog.client``: talk to a chatlog server, or measure it under load.

Everyday use sends lines and prints each reply with its round-trip time::

    python -m chatlog.client --host 127.0.0.1 --port 5000 "Hello, Server!" "second"

Load options (``--connections``, ``--messages``/``--duration``, ``--pipeline``,
``--rate``, ``--procs``, ...) drive many connections and print a summary
(``--json``: one JSON object with the figures).  The pieces:

- :mod:`chatlog.client.options`: the command line;
- :mod:`chatlog.client.session`: the everyday conversation;
- :mod:`chatlog.client.load`: the load protocols, closed and open loop;
- :mod:`chatlog.client.runner`: endpoints (TCP, TLS), connecting, progress bar;
- :mod:`chatlog.client.procs`: ``--procs``, several processes, one histogram;
- :mod:`chatlog.client.stats`: the HdrHistogram and the summary;
- :mod:`chatlog.client.clientlog`: ``--logfile``, in the server's formats.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred

from chatlog.client.options import is_load, parse
from chatlog.client.runner import ClientError
from chatlog.client.stats import Summary

PROG = "chatlog.client"


async def run(
    reactor: Any,
    argv: Sequence[str],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Do what ``argv`` asks; return the exit status (1 when anything went wrong)."""
    options = parse(argv)
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    summary: Summary
    try:
        if options.procs > 1:
            from chatlog.client.procs import run_procs

            summary = await run_procs(reactor, options)
        elif is_load(options):
            from chatlog.client.runner import run_load

            summary = await run_load(reactor, options)
        else:
            from chatlog.client.session import converse

            summary = await converse(reactor, options, stdin=stdin, stdout=stdout)
    except ClientError as error:
        stderr.write(f"{PROG}: {error}\n")
        return 1
    if options.json:
        stdout.write(summary.json_line() + "\n")
    elif is_load(options):
        stdout.write(summary.text() + "\n")
    stdout.flush()
    if options.worker:
        return 0  # the parent reads the problems from the JSON and reports them
    if summary.problems:
        # One line: the first problem; --json lists the first few.
        more = " (and more: see --json)" if len(summary.problems) > 1 else ""
        stderr.write(f"{PROG}: {summary.problems[0]}{more}\n")
    if summary.errors:
        if not summary.problems:
            stderr.write(f"{PROG}: {summary.errors} messages got no proper reply\n")
        return 1
    return 1 if summary.problems else 0


def main(reactor: Any, argv: Sequence[str] | None = None) -> Deferred[None]:
    """The ``task.react`` entry: exits with :func:`run`'s status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    # Parse first, so that --help and usage errors exit before any work.
    parse(arguments)

    async def body() -> None:
        code = await run(reactor, arguments)
        if code:
            raise SystemExit(code)

    return Deferred.fromCoroutine(body())
