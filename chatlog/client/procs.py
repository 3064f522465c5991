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
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import chatlog
from chatlog.client.runner import ClientError
from chatlog.client.stats import Summary


def shares(total: int, parts: int) -> list[int]:
    """Split ``total`` connections as evenly as possible over ``parts`` processes."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def worker_argv(options: argparse.Namespace, connections: int, offset: int) -> list[str]:
    """The command line of one worker: the same load, its share of it."""
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
    ]
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
    """One worker process: its ``ready`` line, its summary, its exit."""

    def __init__(self, index: int, ready: Deferred[None]) -> None:
        self.index = index
        self.ready = ready
        self.output = b""
        self.said_ready = False
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.said_ready and b"\n" in self.output:
            line, _, self.output = self.output.partition(b"\n")
            self.said_ready = line == b"ready"
            if self.said_ready and not self.ready.called:
                self.ready.callback(None)

    def go(self) -> None:
        assert self.transport is not None
        self.transport.write(b"go\n")
        self.transport.closeStdin()

    def stop(self) -> None:
        with contextlib.suppress(ProcessExitedAlready):  # already gone
            if self.transport is not None:
                self.transport.signalProcess(signal.SIGTERM)

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
        self.ended.callback(code)

    def summary(self) -> Summary:
        try:
            data = json.loads(self.output)
        except ValueError:
            raise ClientError(f"client worker {self.index} printed no summary") from None
        return Summary.from_json(data)


async def run_procs(reactor: Any, options: argparse.Namespace) -> Summary:
    """Run the load over ``options.procs`` workers and merge what they measured."""
    env = dict(os.environ)
    # The workers import the same chatlog as this process, installed or not.
    root = str(Path(chatlog.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    workers: list[Worker] = []
    offset = options.conn_offset
    for index, count in enumerate(shares(options.connections, options.procs), 1):
        worker = Worker(index, Deferred())
        argv = [sys.executable, "-m", "chatlog.client", *worker_argv(options, count, offset)]
        # stdout is read (ready, then the JSON summary); stderr is the user's.
        reactor.spawnProcess(worker, sys.executable, argv, env=env, childFDs={0: "w", 1: "r", 2: 2})
        workers.append(worker)
        offset += count
    try:
        await gatherResults([w.ready for w in workers], consumeErrors=True)
    except Exception as failed:
        for worker in workers:
            worker.stop()
        await gatherResults([w.ended for w in workers])
        cause = getattr(failed, "subFailure", None)
        if cause is not None and isinstance(cause.value, ClientError):
            raise cause.value from None
        raise
    for worker in workers:
        worker.go()
    await gatherResults([w.ended for w in workers])
    summary = Summary.merge([w.summary() for w in workers])
    return summary
