"""Everyday use: send lines one at a time, print each reply and its round trip.

The lines come from the command line, from standard input when it is a pipe
or a file, or from a prompt when it is a terminal.  Each line is sent once
the previous reply is in, so every round trip is that of one message alone.
Connecting and each reply's wait are bounded by ``--timeout``; waiting for
the next line of input is not (a person may be thinking, a pipe may be slow).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredQueue, race
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from chatlog.client.clientlog import ClientLog
from chatlog.client.load import why_lost
from chatlog.client.runner import (
    ClientError,
    LineReader,
    connect_within,
    connection_error,
    make_endpoint,
    resolve,
)
from chatlog.client.stats import Recorder, Summary
from chatlog.log import escape_text
from chatlog.wire import REPLY_PREFIX, format_address


class ConnectionGone(Exception):
    """The server closed the connection, or it was lost."""


class Conversation(Protocol):
    """One connection; :meth:`ask` sends a line and gives its reply and round trip."""

    transport: Any

    def __init__(
        self,
        now_ns: Callable[[], int] = time.perf_counter_ns,
        log: ClientLog | None = None,
        on_unsolicited: Callable[[bytes], None] | None = None,
    ) -> None:
        self.now_ns = now_ns
        self.log = log
        self.on_unsolicited = on_unsolicited
        self.conn = 1
        self.seq = 0
        self.buffer = b""
        self.waiting: deque[tuple[Deferred[tuple[bytes, int]], int]] = deque()
        self.lost: Failure | None = None
        self._watchers: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    def ask(self, line: bytes) -> Deferred[tuple[bytes, int]]:
        """Send ``line``; fires with (reply, round trip in ns), or fails with ConnectionGone."""
        answer: Deferred[tuple[bytes, int]] = Deferred()
        if self.lost is not None:
            answer.errback(self._gone())
            return answer
        self.seq += 1
        now = self.now_ns()
        self.waiting.append((answer, now))
        self.transport.write(line + b"\n")
        if self.log is not None:
            self.log.pending.append(("sent", now, self.conn, self.seq, line, 0))
        return answer

    def dataReceived(self, data: bytes) -> None:
        now = self.now_ns()
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if not self.waiting:
                if self.on_unsolicited is not None:
                    self.on_unsolicited(line)
                continue
            answer, start = self.waiting.popleft()
            if self.log is not None:
                seq = self.seq - len(self.waiting)
                self.log.pending.append(("reply", now, self.conn, seq, line, now - start))
            answer.callback((line, now - start))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        waiting, self.waiting = self.waiting, deque()
        for answer, _ in waiting:
            answer.errback(self._gone())
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.callback(None)

    def when_lost(self) -> Deferred[None]:
        """Fires when the connection ends (at once if it has)."""
        watcher: Deferred[None] = Deferred(lambda d: self._watchers.remove(d))
        if self.lost is not None:
            watcher.callback(None)
        else:
            self._watchers.append(watcher)
        return watcher

    def _gone(self) -> ConnectionGone:
        if self.lost is None:
            return ConnectionGone("closed by the server")
        return ConnectionGone(why_lost(self.lost))


class NoReply(Exception):
    """No reply came within ``--timeout``."""


async def ask_within(
    proto: Conversation, line: bytes, clock: IReactorTime, timeout: float
) -> tuple[bytes, int]:
    """``proto.ask(line)``, or :class:`NoReply` (connection aborted) after ``timeout`` seconds."""
    try:
        return await proto.ask(line).addTimeout(timeout, clock)
    except defer.TimeoutError:
        # A reply that comes after all would be taken for the next line's.
        proto.transport.abortConnection()
        raise NoReply(f"no reply within {timeout:g} s (--timeout)") from None


def show_reply(reply: bytes, rtt_ns: int) -> str:
    """``Server received: Hello  (0.213 ms)``; unprintable bytes escaped as in the log."""
    text, _ = escape_text(reply)
    return f"{text.decode('utf-8')}  ({rtt_ns / 1e6:.3f} ms)"


def argument_lines(messages: list[str]) -> list[bytes]:
    """Command-line messages as lines: an argument with newlines is several lines."""
    return [line for message in messages for line in os.fsencode(message).split(b"\n")]


async def converse(
    reactor: Any,
    options: argparse.Namespace,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> Summary:
    """Send the lines, print the replies; the summary counts them (--json prints it)."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    family, ip = resolve(options.host, options.port)
    where = format_address(ip, options.port)
    endpoint = make_endpoint(reactor, options, family, ip)
    log = (
        ClientLog(options.logfile, options.format, options.utc, ip, options.port)
        if options.logfile
        else None
    )
    recorder = Recorder()
    replies = errors = sent = 0
    started = time.perf_counter_ns()

    def say(text: str) -> None:
        if not options.json:
            stdout.write(text + "\n")
            stdout.flush()

    def unsolicited(line: bytes) -> None:
        # Such as the "ERROR timeout" of an idle connection, just before the close.
        say(escape_text(line)[0].decode("utf-8"))

    proto = Conversation(log=log, on_unsolicited=unsolicited)
    try:
        try:
            await connect_within(endpoint, proto, reactor, options.timeout)
        except Exception:
            raise connection_error(Failure(), where, options.timeout) from None

        interactive = not options.message and stdin.isatty()
        queue: DeferredQueue[bytes | None] = DeferredQueue()
        reader: LineReader | None = None
        if options.message:
            for argument in argument_lines(options.message):
                queue.put(argument)
            queue.put(None)
        else:
            reader = LineReader(reactor, stdin.fileno(), queue.put, lambda: queue.put(None))
            reader.start()
        try:
            while True:
                if interactive:
                    stdout.write("> ")
                    stdout.flush()
                got: Deferred[bytes | None] = queue.get()
                lost: Deferred[bytes | None] = proto.when_lost().addCallback(lambda _: None)
                index, line = await race([got, lost])
                if index == 1:
                    raise proto._gone()
                if line is None:
                    break
                if interactive and not line.strip():
                    continue
                sent += 1
                try:
                    reply, rtt_ns = await ask_within(proto, line, reactor, options.timeout)
                except NoReply as silence:
                    raise ClientError(f"{where}: message {sent}: {silence}") from None
                if reply.startswith(REPLY_PREFIX):
                    replies += 1
                    recorder.pending.append(rtt_ns // 1000)
                else:
                    errors += 1
                say(show_reply(reply, rtt_ns))
        except ConnectionGone as gone:
            raise ClientError(f"connection to {where} lost: {gone}") from None
        finally:
            if reader is not None:
                reader.stop()
            if interactive:
                stdout.write("\n")
        proto.transport.loseConnection()
    finally:
        if log is not None:
            log.close()
    recorder.fold()
    return Summary(
        messages=replies,
        errors=errors,
        duration_s=(time.perf_counter_ns() - started) / 1e9,
        connections=1,
        histogram=recorder.histogram,
    )
