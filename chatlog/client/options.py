"""The command line of ``python -m chatlog.client``: parsing and checking.

Three modes share one parser.  Messages on the command line (or none, with
standard input) make a *conversation*: each line is sent, its reply printed
with its round-trip time.  Any load option (``--connections``,
``--messages``, ``--duration``, ``--rate``, ``--procs``) makes a *load run*
whose result is a summary.  ``--sweep`` makes a *sweep*: open-loop load runs
of rising rate, to find the highest rate a server takes within an SLO.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from chatlog.latency import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS
from chatlog.log import FORMATS
from chatlog.numbers import duration, number
from chatlog.wire import REPLY_PREFIX

#: A load run with neither --messages nor --duration lasts this long (as wrk does).
DEFAULT_DURATION = 10.0
DEFAULT_SIZE = 16
#: A sweep's steps: measured for this long each, after this much warm-up.
DEFAULT_STEP_DURATION = 5.0
DEFAULT_STEP_WARMUP = 1.0
#: A sweep's SLO: the p99 round trip, in ms.
DEFAULT_SLO_P99_MS = 10.0
#: Bisection steps after the ramp of a sweep.
DEFAULT_BISECT = 4


class UsageError(Exception):
    """Options that do not fit together; argparse reports it with the usage line."""


_positive_int = number(int, 1, "a whole number of at least 1")
_port = number(int, 1, "a TCP port (1 to 65535)", maximum=65535)
#: Durations as wrk and hey take them: 30s, 2m, 500ms, 1m30s; a plain number is seconds.
_seconds = duration(0.0, "a duration above 0 (like 30, 30s, 500ms, 2m)", above=True)
_warmup = duration(0.0, "a duration of 0 or more (like 5, 5s, 500ms, 1m)")
_rate = number(float, 0.0, "a rate in messages per second above 0", above=True)
_ms = number(float, 0.0, "a number of milliseconds above 0", above=True)
_count = number(int, 0, "a whole number (0 or more)")


def _rates(text: str) -> list[float]:
    """``--rates 1000,2000,5000``: rising rates, each above 0."""
    try:
        rates = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r}") from None
    if not rates or rates[0] <= 0:
        raise argparse.ArgumentTypeError("rates are messages per second above 0, comma-separated")
    return rates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatlog.client",
        description=(
            "Talk to a chatlog server: send MESSAGEs (or standard input's lines, or "
            "what you type) and print each reply with its round-trip time; or, with "
            "load options, drive many connections and summarise throughput and "
            "round-trip percentiles."
        ),
        epilog=(
            "Round trips are timed with a monotonic clock and recorded in an "
            f"HdrHistogram ({LOWEST_US} us to {HIGHEST_US // 1_000_000} s, "
            f"{SIGNIFICANT_DIGITS} significant digits).  With --rate the "
            "latency of each message counts from its scheduled send time."
        ),
    )
    parser.add_argument("message", nargs="*", help="lines to send, one reply each")
    where = parser.add_argument_group("server")
    where.add_argument(
        "--host", default="127.0.0.1", help="server address or name (default: %(default)s)"
    )
    where.add_argument(
        "--port", type=_port, default=5000, help="server port (default: %(default)s)"
    )
    where.add_argument(
        "--tls", action="store_true", help="connect with TLS (server on an ssl: endpoint)"
    )
    where.add_argument(
        "--ca", metavar="FILE", help="PEM certificate(s) to trust for --tls instead of the system's"
    )
    where.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="give up connecting, or waiting for a reply that does not come, after S "
        "(seconds, or with a unit: 500ms, 30s, 2m; default: %(default)s)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--connections", type=_positive_int, metavar="N", help="concurrent connections (default: 1)"
    )
    load.add_argument("--messages", type=_positive_int, metavar="M", help="messages per connection")
    load.add_argument(
        "--duration",
        type=_seconds,
        metavar="S",
        help="send for S (seconds, or with a unit: 500ms, 30s, 2m, 1m30s; "
        f"default without --messages: {DEFAULT_DURATION:g})",
    )
    load.add_argument(
        "--size",
        type=_positive_int,
        default=DEFAULT_SIZE,
        metavar="B",
        help="message size in bytes, newline included (as in the bench); a message is at least its id, like c3-s17- (default: %(default)s)",
    )
    load.add_argument(
        "--pipeline",
        type=_positive_int,
        default=1,
        metavar="K",
        help="messages in flight per connection, closed loop (default: %(default)s)",
    )
    load.add_argument(
        "--rate",
        type=_rate,
        metavar="R",
        help="open loop: R messages per second in total on a fixed schedule; latency counts from the scheduled time",
    )
    load.add_argument(
        "--warmup",
        type=_warmup,
        metavar="S",
        help="run S first without counting it (seconds, or 500ms, 5s, 1m; "
        f"default: 0; for each step of a sweep {DEFAULT_STEP_WARMUP:g})",
    )
    load.add_argument(
        "--procs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="split the connections (and rate) over N client processes and merge their histograms",
    )
    load.add_argument(
        "--expect",
        default=REPLY_PREFIX.decode(),
        metavar="PREFIX",
        help="a reply is PREFIX then the message (default: %(default)r), for other servers",
    )
    sweep = parser.add_argument_group(
        "sweep: how much can this server take?",
        "Open-loop steps of rising rate (--duration S each, after --warmup), until the p99 "
        "exceeds the SLO, errors appear or fewer replies come back than were offered; then a "
        "bisection between the last good and the first bad step.  The answer is the highest "
        "rate that met the SLO; a step whose limit was the client is marked so, never taken "
        "for the server's.",
    )
    sweep.add_argument("--sweep", action="store_true", help="find the highest rate within the SLO")
    sweep.add_argument(
        "--slo-p99",
        type=_ms,
        metavar="MS",
        help=f"the SLO: p99 round trip at most MS ms (default: {DEFAULT_SLO_P99_MS:g})",
    )
    rates = sweep.add_mutually_exclusive_group()
    rates.add_argument(
        "--rates", type=_rates, metavar="R1,R2,...", help="the steps' rates, msgs/s in total"
    )
    rates.add_argument(
        "--rate-max",
        type=_rate,
        metavar="R",
        help="steps double from 1000 msgs/s (or R if less) up to R "
        "(default: no limit, until a step fails)",
    )
    sweep.add_argument(
        "--bisect",
        type=_count,
        metavar="N",
        help=f"bisection steps after the ramp (default: {DEFAULT_BISECT})",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    out.add_argument(
        "--percentiles",
        action="store_true",
        help="after a load run's summary, the round trips' HdrHistogram percentile "
        "spectrum in ms, as hdrh prints it (with --json: its text under "
        '"percentile_distribution")',
    )
    out.add_argument(
        "--logfile",
        metavar="PATH",
        help="the client's own log of every message sent and reply received (appended)",
    )
    out.add_argument(
        "--format",
        choices=list(FORMATS),
        default="event",
        help="--logfile format (default: %(default)s)",
    )
    out.add_argument(
        "--utc", action="store_true", help="--logfile timestamps in UTC instead of local time"
    )
    out.add_argument(
        "--hlog",
        metavar="FILE",
        help="write an HdrHistogram interval log (.hlog) of the round trips: one histogram "
        "per --interval (default 1 s), every step of a sweep",
    )
    out.add_argument(
        "--interval",
        type=_seconds,
        metavar="S",
        help="print a line every S on stderr (seconds, or 500ms, 5s): rate, p50, p99, errors",
    )
    # What --procs passes to its workers; not for people.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--conn-offset", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def is_load(options: argparse.Namespace) -> bool:
    """Whether the options ask for a load run (or a sweep) rather than a conversation."""
    return (
        options.connections is not None
        or options.messages is not None
        or options.duration is not None
        or options.rate is not None
        or options.procs > 1
        or options.worker
        or options.sweep
    )


_SWEEP_ONLY = {
    "slo_p99": "--slo-p99",
    "rates": "--rates",
    "rate_max": "--rate-max",
    "bisect": "--bisect",
}


def check(options: argparse.Namespace) -> None:
    """Fill defaults in and refuse combinations that mean nothing."""
    if options.ca and not options.tls:
        raise UsageError("--ca only means something with --tls")
    options.expect = os.fsencode(options.expect)
    if options.sweep:
        if options.messages is not None:
            raise UsageError("a sweep's steps last --duration S each: not --messages")
        if options.rate is not None:
            raise UsageError("a sweep chooses its rates: give --rates or --rate-max, not --rate")
        if options.percentiles:
            raise UsageError("--percentiles is for load runs; a sweep's --hlog has every step")
        if options.duration is None:
            options.duration = DEFAULT_STEP_DURATION
        if options.warmup is None:
            options.warmup = DEFAULT_STEP_WARMUP
        if options.slo_p99 is None:
            options.slo_p99 = DEFAULT_SLO_P99_MS
        if options.bisect is None:
            options.bisect = DEFAULT_BISECT
    else:
        if options.percentiles and not is_load(options):
            raise UsageError("--percentiles is for load runs")
        for name, flag in _SWEEP_ONLY.items():
            if getattr(options, name) is not None:
                raise UsageError(f"{flag} is for --sweep")
    if options.warmup is None:
        options.warmup = 0.0
    if is_load(options):
        if options.message:
            raise UsageError(
                "give MESSAGEs or load options (--connections, --messages, ...), not both"
            )
        if options.connections is None:
            options.connections = 1
        if options.messages is not None and options.duration is not None:
            raise UsageError("give --messages or --duration, not both")
        if options.messages is None and options.duration is None:
            options.duration = DEFAULT_DURATION
        if options.procs > options.connections:
            raise UsageError(f"--procs {options.procs} needs at least as many --connections")
    else:
        if options.warmup:
            raise UsageError("--warmup is for load runs")
        for value, flag in ((options.hlog, "--hlog"), (options.interval, "--interval")):
            if value:
                raise UsageError(f"{flag} is for load runs")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and check ``argv``; exits with the usage line (status 2) when wrong."""
    parser = build_parser()
    options = parser.parse_args(list(argv))
    try:
        check(options)
    except UsageError as error:
        parser.error(str(error))
    return options
