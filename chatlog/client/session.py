"""Everyday use: send lines one at a time, print each reply and its round trip.

The lines come from the command line, from standard input when it is a pipe
or a file, or from a prompt when it is a terminal (:mod:`chatlog.client.prompt`:
line editing and history).  Each line is sent once the previous reply is in,
so every round trip is that of one message alone.
Connecting and each reply's wait are bounded by ``--timeout``; waiting for
the next line of input is not (a person may be thinking, a pipe may be slow).
Ctrl-C ends the conversation where it is: a reply still awaited is counted
as unanswered, and the summary says the conversation was interrupted.
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

from chatlog.client.clientlog import REPLY_LINE, SENT_LINE, ClientLog
from chatlog.client.interrupt import Interrupts
from chatlog.client.plan import why_lost
from chatlog.client.prompt import Prompt
from chatlog.client.runner import (
    ClientError,
    LineReader,
    connect_within,
    connection_error,
    make_endpoint,
    open_log,
    resolve,
)
from chatlog.client.stats import Recorder, Summary
from chatlog.log import escape_text
from chatlog.wire import format_address


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
            self.log.pending.append((SENT_LINE, self.conn, self.seq, now, line))
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
                self.log.pending.append((REPLY_LINE, self.conn, seq, start, now, line))
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


class Interrupted(Exception):
    """Ctrl-C."""


async def converse(
    reactor: Any,
    options: argparse.Namespace,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    interrupts: Interrupts | None = None,
) -> Summary:
    """Send the lines, print the replies; the summary counts them (--json prints it)."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    interrupts = interrupts if interrupts is not None else Interrupts(reactor)
    family, ip = resolve(options.host, options.port)
    where = format_address(ip, options.port)
    endpoint = make_endpoint(reactor, options, family, ip)
    log = open_log(options, ip)
    recorder = Recorder()
    replies = errors = sent = unanswered = 0
    started = time.perf_counter_ns()
    # One per wait in progress, fired by Ctrl-C (race cancels the loser: never share one).
    stoppers: list[Deferred[None]] = []

    def interrupt() -> None:
        for stopper in stoppers[:]:
            if not stopper.called:
                stopper.callback(None)

    def say(text: str) -> None:
        if not options.json:
            stdout.write(text + "\n")
            stdout.flush()

    def unsolicited(line: bytes) -> None:
        # Such as the "ERROR timeout" of an idle connection, just before the close.
        say(escape_text(line)[0].decode("utf-8"))

    async def unless_interrupted(waiting: Deferred[Any]) -> Any:
        """What ``waiting`` gives, or :class:`Interrupted` on Ctrl-C (``waiting`` cancelled)."""
        stopper: Deferred[None] = Deferred()
        stoppers.append(stopper)
        if interrupts.requested:
            stopper.callback(None)
        # race() waits for a success: a failure must arrive as a result to win it.
        outcome: Deferred[tuple[bool, Any]] = waiting.addCallbacks(
            lambda value: (True, value), lambda failure: (False, failure)
        )
        try:
            index, (ok, value) = await race([outcome, stopper.addCallback(lambda _: (True, None))])
        finally:
            stoppers.remove(stopper)
        if index == 1:
            raise Interrupted()
        if not ok:
            value.raiseException()
        return value

    proto = Conversation(log=log, on_unsolicited=unsolicited)
    interactive = False
    try:
        with interrupts.watch(interrupt):
            try:
                await unless_interrupted(connect_within(endpoint, proto, reactor, options.timeout))
            except Interrupted:
                raise
            except Exception:
                raise connection_error(Failure(), where, options.timeout) from None

            interactive = not options.message and stdin.isatty()
            queue: DeferredQueue[bytes | None] = DeferredQueue()
            reader: LineReader | None = None
            prompt: Prompt | None = None
            if options.message:
                for argument in argument_lines(options.message):
                    queue.put(argument)
                queue.put(None)
            elif interactive and stdin is sys.stdin and os.isatty(stdin.fileno()):
                # The terminal itself: readline's editing and history.
                prompt = Prompt(reactor, queue.put, lambda: queue.put(None))
            else:
                reader = LineReader(reactor, stdin.fileno(), queue.put, lambda: queue.put(None))
                reader.start()
            try:
                while True:
                    if prompt is not None:
                        prompt.next_line()
                    elif interactive:
                        stdout.write("> ")
                        stdout.flush()
                    got: Deferred[bytes | None] = queue.get()
                    lost: Deferred[bytes | None] = proto.when_lost().addCallback(lambda _: None)
                    index, line = await unless_interrupted(race([got, lost]))
                    if index == 1:
                        raise proto._gone()
                    if line is None:
                        break
                    if interactive and not line.strip():
                        continue
                    sent += 1
                    unanswered = 1
                    try:
                        reply, rtt_ns = await unless_interrupted(
                            Deferred.fromCoroutine(
                                ask_within(proto, line, reactor, options.timeout)
                            )
                        )
                    except NoReply as silence:
                        raise ClientError(f"{where}: message {sent}: {silence}") from None
                    unanswered = 0
                    if reply.startswith(options.expect):
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
                if prompt is not None:
                    prompt.stop()
                if interactive:
                    stdout.write("\n")
            proto.transport.loseConnection()
    except Interrupted:
        if proto.transport is not None:
            proto.transport.abortConnection()
    finally:
        if log is not None:
            log.close()
    return Summary(
        messages=replies,
        errors=errors,
        duration_s=(time.perf_counter_ns() - started) / 1e9,
        connections=1,
        histogram=recorder.total(),
        unanswered=unanswered if interrupts.requested else 0,
        interrupted=interrupts.requested,
    )
