"""``--procs N``: one load run split over N client processes, histograms merged.

One Python process drives roughly as many messages per second as one
Python server answers; when the client has to outrun a faster server (or
several server workers), the connections (and ``--rate``) are split over N
worker processes, ``python -m chatlog.client --worker ... --json``.  Each
worker connects, prints ``ready`` and waits; once all are ready the parent
tells them ``go`` on their standard input, so the runs overlap exactly and the
merged throughput is honest.  Each worker's summary carries its HdrHistogram
(base64); the parent adds them up, so the percentiles are those of all
messages, not an average of percentiles.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

import chatlog
from chatlog.client.display import ProgressBar
from chatlog.client.interrupt import Interrupts
from chatlog.client.intervals import Interval, IntervalMerger
from chatlog.client.load import TICK
from chatlog.client.runner import HLOG_INTERVAL, ClientError, interval_sinks, open_hlog
from chatlog.client.stats import Summary
from chatlog.latency import HlogWriter


def shares(total: int, parts: int) -> list[int]:
    """Split ``total`` connections as evenly as possible over ``parts`` processes."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


#: --procs' progress bar without --interval or --hlog: workers report this often.
PROGRESS_INTERVAL = 0.5


def worker_argv(
    options: argparse.Namespace, connections: int, offset: int, progress: bool = False
) -> list[str]:
    """The command line of one worker: the same load, its share of it.

    ``progress``: the parent draws a bar, from intervals the workers report.
    """
    args = [
        "--worker",
        "--json",
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--connections",
        str(connections),
        "--conn-offset",
        str(offset),
        "--size",
        str(options.size),
        "--pipeline",
        str(options.pipeline),
        "--warmup",
        repr(options.warmup),
        "--timeout",
        repr(options.timeout),
        "--expect",
        os.fsdecode(options.expect),
    ]
    if options.hlog or options.interval or progress:
        # The parent merges the workers' intervals: each worker reports its own.
        every = options.interval or (HLOG_INTERVAL if options.hlog else PROGRESS_INTERVAL)
        args += ["--interval", repr(every)]
    if options.messages is not None:
        args += ["--messages", str(options.messages)]
    if options.duration is not None:
        args += ["--duration", repr(options.duration)]
    if options.rate is not None:
        args += ["--rate", repr(options.rate * connections / options.connections)]
    if options.logfile:
        # Every worker appends whole records with one write(2) each flush: one log.
        args += ["--logfile", options.logfile, "--format", options.format]
        if options.utc:
            args.append("--utc")
    if options.tls:
        args.append("--tls")
        if options.ca:
            args += ["--ca", options.ca]
    return args


class Worker(ProcessProtocol):
    """One worker process: its ``ready`` line, its intervals, its summary, its exit."""

    def __init__(
        self, index: int, ready: Deferred[None], merger: IntervalMerger | None = None
    ) -> None:
        self.index = index
        self.ready = ready
        self.merger = merger
        self.buffer = b""
        self.lines: list[bytes] = []
        self.said_ready = False
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if line == b"ready" and not self.said_ready:
                self.said_ready = True
                if not self.ready.called:
                    self.ready.callback(None)
            elif line.startswith(b'{"interval"'):
                if self.merger is not None:
                    self.merger.add(self.index - 1, Interval.from_json(json.loads(line)))
            elif line:
                self.lines.append(line)

    def go(self) -> None:
        assert self.transport is not None
        self.transport.write(b"go\n")
        self.transport.closeStdin()

    def signal(self, name: str) -> None:
        with contextlib.suppress(ProcessExitedAlready):  # already gone
            if self.transport is not None:
                self.transport.signalProcess(name)

    def stop(self) -> None:
        self.signal("TERM")

    def processEnded(self, reason: Failure) -> None:
        code = 0
        if reason.check(ProcessTerminated):
            value: Any = reason.value
            code = value.exitCode if value.exitCode is not None else 128 + (value.signal or 0)
        elif not reason.check(ProcessDone):
            code = 1
        if not self.ready.called:
            self.ready.errback(
                ClientError(
                    f"client worker {self.index} exited (status {code}) before it was connected"
                )
            )
        if self.merger is not None:
            self.merger.ended(self.index - 1)
        self.ended.callback(code)

    def summary(self) -> Summary:
        try:
            data = json.loads(self.lines[-1] if self.lines else self.buffer)
        except ValueError:
            raise ClientError(f"client worker {self.index} printed no summary") from None
        return Summary.from_json(data)


class ProcsProgress:
    """``--procs`` on a terminal: the progress bar, fed by the workers' merged intervals."""

    def __init__(self, reactor: Any, options: argparse.Namespace) -> None:
        self.reactor = reactor
        self.options = options
        self.done = 0
        self.intervals = 0
        self.started = 0.0
        self.bar: ProgressBar | None = None
        self.loop: LoopingCall | None = None

    def add(self, interval: Interval) -> None:
        """An interval sink: its replies are done."""
        self.intervals += 1
        self.done += interval.histogram.get_total_count()

    def start(self) -> None:
        """The workers were told to go: the clock (warmup included) starts."""
        self.started = self.reactor.seconds()
        self.bar = ProgressBar.for_options(self.options)
        self.loop = LoopingCall(self.tick)
        self.loop.clock = self.reactor
        self.loop.start(TICK)

    def tick(self) -> None:
        if self.bar is not None:
            elapsed = self.reactor.seconds() - self.started
            # The workers report intervals of the measured window only: none yet, still warming.
            warming = bool(self.options.warmup) and not self.intervals
            self.bar.show(elapsed, self.done, warming)

    def stop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


async def run_procs(
    reactor: Any,
    options: argparse.Namespace,
    *,
    interrupts: Interrupts | None = None,
    hlog: HlogWriter | None = None,
    label: str = "",
) -> Summary:
    """Run the load over ``options.procs`` workers and merge what they measured.

    ``hlog``: an interval log already open (a sweep's); otherwise ``--hlog``
    opens one for this run.
    """
    env = dict(os.environ)
    # The workers import the same chatlog as this process, installed or not.
    root = str(Path(chatlog.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    interrupts = interrupts if interrupts is not None else Interrupts(reactor)
    own_hlog = hlog is None
    if own_hlog:
        hlog = open_hlog(options, mode="load", offered=options.rate)
    sinks = interval_sinks(options, hlog, label)
    progress = None
    if sys.stderr.isatty() and not options.worker and not options.interval:
        progress = ProcsProgress(reactor, options)
        sinks.append(progress.add)
    merger = IntervalMerger(options.procs, sinks) if sinks else None
    workers: list[Worker] = []

    def interrupt() -> None:
        # Ctrl-C from a terminal reached the workers already; kill -INT only us.
        for worker in workers:
            worker.signal("INT")

    try:
        offset = options.conn_offset
        for index, count in enumerate(shares(options.connections, options.procs), 1):
            worker = Worker(index, Deferred(), merger)
            argv = [
                sys.executable,
                "-m",
                "chatlog.client",
                *worker_argv(options, count, offset, progress=progress is not None),
            ]
            # stdout is read (ready, intervals, the JSON summary); stderr is the user's.
            reactor.spawnProcess(
                worker, sys.executable, argv, env=env, childFDs={0: "w", 1: "r", 2: 2}
            )
            workers.append(worker)
            offset += count
        with interrupts.watch(interrupt):
            try:
                await gatherResults([w.ready for w in workers], consumeErrors=True)
            except Exception as failed:
                if not interrupts.requested:
                    for worker in workers:
                        worker.stop()
                await gatherResults([w.ended for w in workers])
                cause = getattr(failed, "subFailure", None)
                if interrupts.requested:
                    pass  # Ctrl-C while connecting: each worker ended with what it had
                elif cause is not None and isinstance(cause.value, ClientError):
                    raise cause.value from None
                else:
                    raise
            else:
                for worker in workers:
                    worker.go()
                if progress is not None:
                    progress.start()
                await gatherResults([w.ended for w in workers])
        if merger is not None:
            merger.flush()
    finally:
        if progress is not None:
            progress.stop()
        if own_hlog and hlog is not None:
            hlog.close()
    if interrupts.requested:
        parts = [w.summary() for w in workers if w.lines]
        summary = Summary.merge(parts) if parts else Summary(0, 0, 0.0, 0)
        summary.interrupted = True
        return summary
    return Summary.merge([w.summary() for w in workers])
