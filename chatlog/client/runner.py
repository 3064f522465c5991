"""Running the client for real: address, endpoints (TCP or TLS), load runs, progress.

The protocols know nothing of sockets; this module resolves the server once,
builds the endpoint every connection uses, connects them all before the
clock starts (so setting up 1000 connections is not measured as latency),
shows a progress bar (:mod:`chatlog.client.display`) when stderr is a terminal,
and reports.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error, ssl
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, race
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IProtocol,
    IReactorTime,
    IReadDescriptor,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from chatlog._fastpath import client_reactor
from chatlog.client.clientlog import ClientLog
from chatlog.client.display import ProgressBar
from chatlog.client.interrupt import Interrupts
from chatlog.client.intervals import IntervalClock, Sink, hlog_sink, live_sink, worker_sink
from chatlog.client.load import LoadPlan, LoadRun
from chatlog.client.stats import Summary
from chatlog.latency import HlogWriter
from chatlog.wire import format_address

#: --hlog without --interval: one histogram per this many seconds.
HLOG_INTERVAL = 1.0

#: Connection attempts in progress at once: a server's accept backlog (50 in
#: Twisted) overflows with thousands of simultaneous SYNs, and a dropped SYN
#: costs a second's retransmission.
CONNECT_CONCURRENCY = 64


class ClientError(Exception):
    """Something the user must hear about in one line (refused, dropped, ...); exit 1."""


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The server's address family and IP, looked up once for every connection."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ClientError(f"cannot resolve {host}: {error.strerror or error}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def make_endpoint(
    reactor: Any, options: argparse.Namespace, family: int, ip: str
) -> IStreamClientEndpoint:
    """TCP to ``ip``, wrapped in TLS with ``--tls`` (server name checked against ``--host``)."""
    kind = TCP6ClientEndpoint if family == socket.AF_INET6 else TCP4ClientEndpoint
    # Send each batch at once instead of on the next turn (see chatlog._fastpath).
    reactor = client_reactor(reactor)
    endpoint: IStreamClientEndpoint = kind(reactor, ip, options.port, timeout=options.timeout)
    if options.tls:
        trust: Any = None
        if options.ca:
            try:
                with open(options.ca, "rb") as pem:
                    trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem.read())])
            except (OSError, ValueError) as error:
                raise ClientError(f"--ca {options.ca}: {error}") from None
        endpoint = wrapClientTLS(ssl.optionsForClientTLS(options.host, trustRoot=trust), endpoint)
    return endpoint


def connection_error(failure: Failure, where: str, timeout: float | None = None) -> ClientError:
    """One line for a failed connection attempt, without Twisted's boilerplate."""
    if failure.check(error.ConnectionRefusedError):
        why = "connection refused"
    elif failure.check(error.TimeoutError, defer.CancelledError, error.ConnectingCancelledError):
        why = "timed out" if timeout is None else f"timed out after {timeout:g} s (--timeout)"
    else:
        why = failure.getErrorMessage()
    return ClientError(f"cannot connect to {where}: {why}")


def connect_within(
    endpoint: IStreamClientEndpoint, proto: IProtocol, clock: IReactorTime, timeout: float
) -> Deferred[IProtocol]:
    """Connect ``proto``; cancelled (fails) after ``timeout`` seconds.

    The TCP endpoint has a timeout of its own; this one bounds every endpoint
    alike, whatever it wraps.
    """
    attempt: Deferred[IProtocol] = connectProtocol(endpoint, proto)
    return attempt.addTimeout(timeout, clock)


async def connect_all(
    endpoint: IStreamClientEndpoint, run: LoadRun, where: str, clock: IReactorTime
) -> None:
    """Connect every protocol of ``run``; on any failure abort them all and raise."""
    gate = DeferredSemaphore(CONNECT_CONCURRENCY)
    timeout = run.plan.timeout
    attempts = [
        gate.run(connect_within, endpoint, proto, clock, timeout) for proto in run.build_protocols()
    ]
    results = await DeferredList(attempts, consumeErrors=True)
    # DeferredList gives a Failure in place of each failed attempt's result.
    failures: list[Any] = [result for ok, result in results if not ok]
    if failures:
        for proto in run.protocols:
            if proto.connected:
                proto.transport.abortConnection()
        raise connection_error(failures[0], where, timeout)


@implementer(IReadDescriptor)
class LineReader:
    """Read lines from a file descriptor (standard input) without blocking the reactor.

    ``twisted.internet.stdio.StandardIO`` would also take standard output and
    close it at end of input; this only reads.  Regular files, which epoll
    refuses, are polled by the reactor (Twisted does that by itself).
    """

    def __init__(
        self, reactor: Any, fd: int, on_line: Callable[[bytes], None], on_eof: Callable[[], None]
    ) -> None:
        self.reactor = reactor
        self.fd = fd
        self.on_line = on_line
        self.on_eof = on_eof
        self.buffer = b""
        self.reading = False

    def start(self) -> None:
        if not self.reading:
            self.reading = True
            self.reactor.addReader(self)

    def stop(self) -> None:
        if self.reading:
            self.reading = False
            self.reactor.removeReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "stdin"

    def doRead(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._end()
            return
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            self.on_line(line[:-1] if line.endswith(b"\r") else line)

    def connectionLost(self, reason: Failure) -> None:
        # The reactor calls this instead of doRead when a pipe hangs up.
        self._end()

    def _end(self) -> None:
        if not self.reading:
            return
        self.stop()
        if self.buffer:
            last, self.buffer = self.buffer, b""
            self.on_line(last[:-1] if last.endswith(b"\r") else last)
        self.on_eof()


def wait_for_go(reactor: Any) -> Deferred[None]:
    """``--worker``: say ``ready`` on stdout, then wait for a line on stdin (the barrier)."""
    go: Deferred[None] = Deferred(lambda _: reader.stop())

    def fire(*_: object) -> None:
        reader.stop()
        if not go.called:
            go.callback(None)

    reader = LineReader(reactor, sys.stdin.fileno(), fire, fire)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    reader.start()
    return go


def open_log(options: argparse.Namespace, ip: str, background: bool = False) -> ClientLog | None:
    """``--logfile``: load runs write it from a writer process, the conversation in place."""
    if not options.logfile:
        return None
    try:
        return ClientLog(
            options.logfile, options.format, options.utc, ip, options.port, background=background
        )
    except OSError as error:
        raise ClientError(f"--logfile {options.logfile}: {error.strerror or error}") from None


def open_hlog(options: argparse.Namespace, **note: Any) -> HlogWriter | None:
    """``--hlog``: the interval log, its first line saying what run it is."""
    if not options.hlog:
        return None
    try:
        hlog = HlogWriter(options.hlog)
    except OSError as error:
        raise ClientError(f"--hlog {options.hlog}: {error.strerror or error}") from None
    hlog.note(
        connections=options.connections,
        procs=options.procs,
        size=options.size,
        warmup_s=options.warmup,
        duration_s=options.duration,
        **note,
    )
    return hlog


def interval_sinks(
    options: argparse.Namespace, hlog: HlogWriter | None, label: str = ""
) -> list[Sink]:
    """Where each interval goes: the interval log, a live line, the --procs parent."""
    sinks: list[Sink] = []
    if hlog is not None:
        sinks.append(hlog_sink(hlog))
    if options.interval:
        sinks.append(worker_sink(sys.stdout) if options.worker else live_sink(sys.stderr, label))
    return sinks


async def run_load(
    reactor: Any,
    options: argparse.Namespace,
    *,
    interrupts: Interrupts | None = None,
    hlog: HlogWriter | None = None,
    label: str = "",
) -> Summary:
    """Connect, run the load, return the summary (problems listed in it).

    ``hlog``: an interval log already open (a sweep's); otherwise ``--hlog``
    opens one for this run.
    """
    family, ip = resolve(options.host, options.port)
    where = format_address(ip, options.port)
    plan = LoadPlan.from_options(options)
    own_hlog = hlog is None
    if own_hlog:
        hlog = open_hlog(options, mode="load", offered=plan.rate)
    log = open_log(options, ip, background=True)
    interrupts = interrupts if interrupts is not None else Interrupts(reactor)
    bar: ProgressBar | None = None
    try:
        run = LoadRun(plan, reactor, log=log)
        sinks = interval_sinks(options, hlog, label)
        if sinks:
            IntervalClock(run, options.interval or HLOG_INTERVAL, sinks)
        endpoint = make_endpoint(reactor, options, family, ip)
        # Fired by Ctrl-C, to stop waiting for --procs' go (race cancels the loser:
        # it must not be run.finished itself).
        stopped: Deferred[None] = Deferred()

        def interrupt() -> None:
            run.interrupt()
            if not stopped.called:
                stopped.callback(None)

        with interrupts.watch(interrupt):
            await connect_all(endpoint, run, where, reactor)
            if options.worker and not run.interrupted:
                await race([wait_for_go(reactor), stopped])
            if run.interrupted:
                for proto in run.protocols:
                    if proto.connected:
                        proto.transport.abortConnection()
            else:
                if sys.stderr.isatty() and not options.worker and not options.interval:
                    bar = ProgressBar.for_options(options)
                    run.on_tick = bar.update
                await run.start()
    finally:
        if bar is not None:
            bar.stop()
        if log is not None:
            log.close()
        if own_hlog and hlog is not None:
            hlog.close()
    summary = run.summary()
    summary.problems = [f"{where}: {text}" for text in summary.problems]
    return summary
