"""twistd's entry to chatlog: the command-line options and ``makeService``, wiring only.

``twistd [-n] chatlog [options]`` parses :class:`Options`, then calls
:func:`makeService`, which puts the pieces together, as
``twisted/tap/portforward.py`` does, ending in a service over an endpoint:

    LogWriter (chatlog.log)  <-  ChatFactory -> ChatProtocol (chatlog.server)
                                     |
    ChatlogService over the --port endpoint  [+ MetricsService] [+ WorkerPool]

The reactor is imported only inside ``makeService``, so importing this module
never installs one.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any, cast

from twisted.application import service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python import usage

import chatlog
import twisted
from chatlog.log import FORMATS, LogWriter, make_formatter
from chatlog.numbers import number
from chatlog.server.factory import ChatFactory
from chatlog.server.listening import (
    SHAREABLE,
    SharedPortEndpoint,
    inherited_endpoint,
    listening_description,
)
from chatlog.server.proxy import PROXY_PREFIX
from chatlog.server.quota import Quotas, parse_limit, parse_network
from chatlog.server.service import ChatlogService, MetricsService
from chatlog.server.workers import LISTEN_FD, ParentWatch, WorkerPool, worker_logfile

_positive_int = number(int, 1, "a whole number of at least 1")
_count = number(int, 0, "a whole number, 0 for no limit")
_seconds = number(float, 0.0, "a number of seconds, 0 for never")
#: What --node accepts: a name that fits a json string, a text record's word
#: and an rsyslog tag (chatlog-NAME) as it is.
NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def endpoint_description(text: str, option: str = "--port") -> str:
    """``5000`` -> ``tcp:5000``; any endpoint string is checked and kept."""
    text = text.strip()
    if text.isdigit():
        if not 0 <= int(text) <= 65535:
            raise usage.UsageError(f"{option} {text}: a TCP port is 0 to 65535")
        return f"tcp:{text}"
    try:
        # Endpoint constructors only keep the reactor: parse without one so a
        # typo is reported before twistd starts (and no reactor is installed).
        serverFromString(cast(Any, None), text)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise usage.UsageError(f"{option} {text!r}: {error}") from None
    return text


class ChatlogOptions(usage.Options):
    """``twistd chatlog`` options; see README.rst for what each one means."""

    synopsis = "[options]"
    longdesc = (
        "Answer every line a client sends with 'Server received: <line>' and "
        "log every connection and message.  A reply is sent only after its "
        "record was written to the log."
    )

    optParameters: list[list[Any]] = [
        ["port", "p", "tcp:5000", "Where to listen: a port number or a Twisted endpoint string."],
        ["logfile", "l", "chatlog.log", "The message log ('-' for standard output)."],
        ["format", "f", "event", f"Log format: {', '.join(FORMATS)}."],
        ["max-line", None, 65536, "Longest line accepted, in bytes.", _positive_int],
        ["idle-timeout", None, 300.0, "Close a connection silent this long.", _seconds],
        [
            "line-timeout",
            None,
            30.0,
            "Close a connection that has not finished a started line within this many seconds.",
            _seconds,
        ],
        [
            "node",
            None,
            None,
            "This server's name in a fleet (letters, digits, '.', '_', '-'): every json "
            'record carries it as "node", and Server Started names it.',
        ],
        ["max-connections", None, 10000, "Most connections at once.", _count],
        ["max-per-ip", None, 1000, "Most connections at once from one address.", _count],
        [
            "rate-limit",
            None,
            None,
            "Most messages per second per client address (token bucket, burst BURST, default "
            "N; 0: none). Over it, the address's connections are not read until it is back "
            "under: nothing is dropped",
            parse_limit,
        ],
        [
            "byte-limit",
            None,
            None,
            "Most bytes per second per client address, like --rate-limit",
            parse_limit,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint (e.g. tcp:9100).",
        ],
        [
            "workers",
            None,
            1,
            "Processes sharing the listening port, each with its own log.",
            _positive_int,
        ],
        [
            "worker",
            None,
            0,
            "Set by --workers for the processes it starts: serve as worker I on the "
            "socket inherited as file descriptor 3.",
            _count,
        ],
    ]
    optFlags = [
        ["utc", None, "Timestamps in UTC instead of local time."],
        ["fsync", None, "Reply only after the record is on disk (fdatasync per batch)."],
        [
            "no-fastpath",
            None,
            "Serve on Twisted's stock code paths only (slower; for comparison or if in doubt).",
        ],
    ]
    compData = usage.Completions(
        optActions={
            "format": usage.CompleteList(list(FORMATS)),
            "logfile": usage.CompleteFiles(),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self["rate-exempt"] = []

    def opt_rate_exempt(self, network: str) -> None:
        """An address or network (CIDR) that --rate-limit and --byte-limit spare (repeatable)."""
        try:
            self["rate-exempt"].append(parse_network(network))
        except ValueError as error:
            raise usage.UsageError(f"--rate-exempt {network!r}: {error}") from None

    def opt_version(self) -> None:
        """Print chatlog's version (and Twisted's and Python's) and exit."""
        print(
            f"chatlog {chatlog.__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})"
        )
        raise SystemExit(0)

    def postOptions(self) -> None:
        self["port"] = endpoint_description(self["port"])
        if self["metrics"] is not None:
            self["metrics"] = endpoint_description(self["metrics"], option="--metrics")
        if self["format"] not in FORMATS:
            raise usage.UsageError(
                f"--format {self['format']!r}: choose one of {', '.join(FORMATS)}"
            )
        if self["node"] is not None and not NODE_NAME.fullmatch(self["node"]):
            raise usage.UsageError(
                f"--node {self['node']!r}: 1 to 64 letters, digits, '.', '_' or '-'"
            )
        for flag, *_ in self.optFlags:
            self[str(flag)] = bool(self[str(flag)])
        if self["worker"] and self["worker"] >= self["workers"]:
            raise usage.UsageError("--worker is set by --workers for the workers it starts")
        if self["workers"] > 1:
            self._check_workers()
        logfile = self["logfile"]
        twistd: Any = getattr(self, "parent", None)  # twistd's own options, when it parses us
        if (
            logfile == "-"
            and twistd is not None
            and "nodaemon" in twistd
            and not twistd["nodaemon"]
        ):
            # A daemon's standard output is /dev/null: every record would be
            # acknowledged and lost.
            raise usage.UsageError(
                "--logfile - needs twistd -n: a daemon's standard output is /dev/null"
            )
        if logfile != "-":
            folder = os.path.dirname(os.path.abspath(logfile))
            if not os.path.isdir(folder):
                raise usage.UsageError(f"--logfile {logfile!r}: no such directory {folder}")

    def _check_workers(self) -> None:
        port = self["port"]
        if port.startswith(("ssl:", "haproxy:ssl:")):
            raise usage.UsageError(
                "--workers with an ssl: port is not supported: terminate TLS in "
                "HAProxy in front of the workers, or run one process"
            )
        if not port.startswith(("tcp:", "tcp6:", "haproxy:tcp:", "haproxy:tcp6:")):
            raise usage.UsageError(f"--workers needs {SHAREABLE}, not {port}")
        if self["logfile"] == "-":
            raise usage.UsageError("--workers needs a --logfile: each worker writes its own")
        if self["metrics"] is not None:
            raise usage.UsageError(
                "--workers with --metrics is not supported yet: each worker keeps its own counters"
            )

    def as_argv(self) -> list[str]:
        """These options as a command line, to start a worker with the same ones."""
        argv: list[str] = []
        for name, _, default, *_ in self.optParameters:
            if name != "worker" and self[name] is not None and self[name] != default:
                argv += [f"--{name}", str(self[name])]
        argv += [f"--{flag[0]}" for flag in self.optFlags if self[str(flag[0])]]
        for network in self["rate-exempt"]:
            argv += ["--rate-exempt", str(network)]
        return argv


class Options(ChatlogOptions):
    """The options as twistd parses them: a mistake is one line on stderr and exit status 2.

    twistd before 26.10 prints its whole usage on standard output for a bad
    option and exits 0, so a script cannot tell; every Twisted chatlog runs
    on does the same here.
    """

    def parseOptions(self, options: Any = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            sys.stderr.write(f"twistd chatlog: {error} (see twistd chatlog --help)\n")
            raise SystemExit(2) from None


def makeService(options: ChatlogOptions, reactor: Any = None) -> service.MultiService:
    """Build the chatlog service tree from parsed ``options``."""
    if reactor is None:
        from twisted.internet import reactor
    description = options["port"]
    # haproxy:tcp:5000 listens on tcp:5000; the protocol reads the PROXY header.
    listening = listening_description(description)
    workers, worker = options["workers"], options["worker"]
    top = service.MultiService()
    endpoint: IStreamServerEndpoint
    if worker:
        # One of the processes --workers started: serve the socket it was handed.
        endpoint = inherited_endpoint(reactor, LISTEN_FD)
        ParentWatch(reactor).setServiceParent(top)
    elif workers > 1:
        endpoint = shared = SharedPortEndpoint(reactor, listening, workers)
    else:
        endpoint = serverFromString(reactor, listening)
    writer = LogWriter(
        worker_logfile(options["logfile"], worker, workers),
        make_formatter(options["format"], utc=options["utc"], node=options["node"]),
        reactor,
        fsync=options["fsync"],
    )
    quotas = None
    if options["rate-limit"] is not None or options["byte-limit"] is not None:
        quotas = Quotas(
            writer,
            reactor,
            options["rate-limit"],
            options["byte-limit"],
            options["rate-exempt"],
        )
    factory = ChatFactory(
        writer,
        reactor,
        max_line=options["max-line"],
        idle_timeout=options["idle-timeout"],
        line_timeout=options["line-timeout"],
        max_connections=options["max-connections"],
        max_per_ip=options["max-per-ip"],
        first_conn=worker + 1,
        conn_step=workers,
        peer_from_proxy_header=description.startswith(PROXY_PREFIX),
        quotas=quotas,
    )
    chatlog = ChatlogService(
        endpoint, description, factory, writer, reactor, fastpath=not options["no-fastpath"]
    )
    chatlog.setServiceParent(top)
    twistd: Any = getattr(options, "parent", None)
    if twistd is not None and "nodaemon" in twistd and not twistd["nodaemon"] and not worker:
        # twistd daemonizes before it starts services: say now what would fail then.
        chatlog.preflight()
    if workers > 1 and not worker:
        pool = WorkerPool(shared, options.as_argv(), workers, reactor)
        chatlog.on_sighup.append(pool.relaySighup)
        pool.setServiceParent(top)
    if options["metrics"] is not None:
        from chatlog.server.metrics import make_registry, metrics_site

        site = metrics_site(make_registry(factory, writer))
        metrics = serverFromString(reactor, options["metrics"])
        MetricsService(metrics, options["metrics"], site, reactor).setServiceParent(top)
    return top
