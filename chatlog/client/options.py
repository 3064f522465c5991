"""The command line of ``python -m chatlog.client``: parsing and checking.

Two modes share one parser.  Messages on the command line (or none, with
standard input) make a *conversation*: each line is sent, its reply printed
with its round-trip time.  Any load option (``--connections``,
``--messages``, ``--duration``, ``--rate``, ``--procs``) makes a *load run*
whose result is a summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from chatlog.latency import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS
from chatlog.log import FORMATS
from chatlog.numbers import number

#: A load run with neither --messages nor --duration lasts this long (as wrk does).
DEFAULT_DURATION = 10.0
DEFAULT_SIZE = 16


class UsageError(Exception):
    """Options that do not fit together; argparse reports it with the usage line."""


_positive_int = number(int, 1, "a whole number of at least 1")
_port = number(int, 1, "a TCP port (1 to 65535)", maximum=65535)
_seconds = number(float, 0.0, "a number of seconds above 0", above=True)
_warmup = number(float, 0.0, "a number of seconds (0 or more)")
_rate = number(float, 0.0, "a rate in messages per second above 0", above=True)


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
        help="give up connecting, or waiting for a reply that does not come, after S seconds (default: %(default)s)",
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
        help=f"send for S seconds (default without --messages: {DEFAULT_DURATION:g})",
    )
    load.add_argument(
        "--size",
        type=_positive_int,
        default=DEFAULT_SIZE,
        metavar="B",
        help="message size in bytes without the newline; a message is at least its id, like c3-s17- (default: %(default)s)",
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
        default=0.0,
        metavar="S",
        help="run S seconds first without counting them (default: %(default)s)",
    )
    load.add_argument(
        "--procs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="split the connections (and rate) over N client processes and merge their histograms",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
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
    # What --procs passes to its workers; not for people.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--conn-offset", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def is_load(options: argparse.Namespace) -> bool:
    """Whether the options ask for a load run rather than a conversation."""
    return (
        options.connections is not None
        or options.messages is not None
        or options.duration is not None
        or options.rate is not None
        or options.procs > 1
        or options.worker
    )


def check(options: argparse.Namespace) -> None:
    """Fill load defaults in and refuse combinations that mean nothing."""
    if options.ca and not options.tls:
        raise UsageError("--ca only means something with --tls")
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
    elif options.warmup:
        raise UsageError("--warmup is for load runs")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and check ``argv``; exits with the usage line (status 2) when wrong."""
    parser = build_parser()
    options = parser.parse_args(list(argv))
    try:
        check(options)
    except UsageError as error:
        parser.error(str(error))
    return options
