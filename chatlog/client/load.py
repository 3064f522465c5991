"""Load runs: many connections, closed or open loop, every round trip recorded.

A :class:`LoadRun` owns what the connections share (plan, clock, recorder,
log, counters); each connection is a :class:`LoadProtocol`.  Nothing here
opens a socket: :mod:`chatlog.client.runner` connects the protocols, and tests
drive them over ``StringTransport`` with a ``task.Clock``.

Closed loop (no ``--rate``): each connection keeps ``pipeline`` messages in
flight; the replies of one read are matched, then as many new messages are
sent with one write.  Open loop (``--rate R``): message *k* of the run is due
at ``start + k/R`` on connection ``k mod N``; a timer sends every due message,
one write per connection, and a message's latency counts from when it was
*due*, so a stalled server shows up in the percentiles instead of silently
slowing the client down (coordinated omission).

Every message carries its id, ``c<conn>-s<seq>-`` padded with ``x`` to
``--size`` bytes: replies come back in order on a connection and are checked
against what was sent, and the server's log can be checked for every id.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from chatlog.client.clientlog import ClientLog
from chatlog.client.stats import Recorder, Summary, cpu_seconds
from chatlog.wire import REPLY_PREFIX

_PREFIX_LEN = len(REPLY_PREFIX)
#: The id at the start of every load message: connection and sequence number.
MESSAGE_ID = re.compile(rb"c(\d+)-s(\d+)-")
#: Seconds between folds of the histogram, log flushes and progress updates.
TICK = 0.2
#: Connection problems kept word for word; beyond them only counted.
_MAX_PROBLEMS = 5


def why_lost(reason: Failure) -> str:
    """A connection's end in a few words: closed, reset, TLS refused..."""
    if reason.check(ConnectionDone):
        return "closed by the server"
    try:
        from OpenSSL.SSL import Error as TLSError
    except ImportError:  # no TLS support installed: no TLS failures either
        return reason.getErrorMessage()
    if reason.check(TLSError):
        args = getattr(reason.value, "args", None) or [[]]
        causes = [entry[-1] for entry in args[0] if entry]
        return "TLS failed: " + ("; ".join(causes) or "handshake error")
    return reason.getErrorMessage()


def payload(conn: int, seq: int, size: int) -> bytes:
    """The load message ``seq`` of connection ``conn``: its id padded to ``size`` bytes."""
    return (b"c%d-s%d-" % (conn, seq)).ljust(size, b"x")


@dataclass
class LoadPlan:
    """What to send: the load options, checked."""

    connections: int = 1
    messages: int | None = None  # per connection (counted ones, after --warmup)
    duration: float | None = None  # seconds, after --warmup
    size: int = 16
    pipeline: int = 1
    rate: float | None = None  # total msgs/s: open loop
    warmup: float = 0.0
    timeout: float = 10.0  # give up when no reply came for this long
    conn_offset: int = 0  # --procs: connection ids of this worker start after it

    @classmethod
    def from_options(cls, options: Any) -> LoadPlan:
        return cls(
            connections=options.connections,
            messages=options.messages,
            duration=options.duration,
            size=options.size,
            pipeline=options.pipeline,
            rate=options.rate,
            warmup=options.warmup,
            timeout=options.timeout,
            conn_offset=options.conn_offset,
        )


class LoadProtocol(Protocol):
    """One connection of a load run: send, match replies, time them."""

    transport: Any

    def __init__(self, run: LoadRun, conn: int) -> None:
        self.run = run
        self.conn = conn
        self.size = run.plan.size
        self.pipeline = run.plan.pipeline
        #: Counted messages still to send (closed loop with --messages), else None.
        self.budget = run.plan.messages if run.plan.rate is None else None
        self.closed_loop = run.plan.rate is None
        #: (seq, payload, start ns, counted) of each message awaiting its reply, in order.
        self.inflight: deque[tuple[int, bytes, int, bool]] = deque()
        self.buffer = b""
        self.seq = 0
        self.replies = 0  # counted replies that matched
        self.errors = 0
        self.last_reply_ns = 0
        self.connected = False
        self.done = False
        self._now = run.now_ns
        self._record = run.recorder.pending.append
        self._log = run.log.pending.append if run.log is not None else None

    def connectionMade(self) -> None:
        self.connected = True
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # Every write is a whole batch: Nagle would only hold it back.
            set_no_delay(True)

    # -- sending ------------------------------------------------------------------

    def send(self, count: int, now: int, due: list[int] | None = None) -> None:
        """Send ``count`` messages with one write; ``due``: their scheduled times (open loop)."""
        conn, size, first = self.conn, self.size, self.seq + 1
        measure_from = self.run.measure_from
        if count == 1 and due is None:
            # The closed loop's usual case, kept short: one message, one write.
            self.seq = first
            message = (b"c%d-s%d-" % (conn, first)).ljust(size, b"x")
            self.transport.write(message + b"\n")
            counted = now >= measure_from
            self.inflight.append((first, message, now, counted))
            if counted and self.budget is not None:
                self.budget -= 1
            if self._log is not None:
                self._log(("sent", now, conn, first, message, 0))
            return
        seqs = range(first, first + count)
        self.seq += count
        payloads = [(b"c%d-s%d-" % (conn, s)).ljust(size, b"x") for s in seqs]
        self.transport.write(b"\n".join(payloads) + b"\n")
        if due is None:
            counted = now >= measure_from
            self.inflight.extend(
                zip(seqs, payloads, repeat(now, count), repeat(counted, count), strict=True)
            )
            if counted and self.budget is not None:
                self.budget -= count
        else:
            self.inflight.extend(
                (s, p, t, t >= measure_from) for s, p, t in zip(seqs, payloads, due, strict=True)
            )
        log = self._log
        if log is not None:
            for s, p in zip(seqs, payloads, strict=True):
                log(("sent", now, conn, s, p, 0))

    def refill(self, now: int) -> None:
        """Closed loop: top the pipeline up, or finish when nothing more is to come."""
        if self.run.sending:
            want = self.pipeline - len(self.inflight)
            if self.budget is not None and now >= self.run.measure_from:
                want = min(want, self.budget)
            if want > 0:
                self.send(want, now)
                return
            if self.budget is None or self.budget > 0 or self.inflight:
                return
        if not self.inflight:
            self.finish()

    # -- receiving ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        now = self._now()
        if self.buffer:
            data = self.buffer + data
        lines = data.split(b"\n")
        self.buffer = lines.pop()
        inflight = self.inflight
        popleft = inflight.popleft
        record = self._record
        log = self._log
        good = 0
        for line in lines:
            if not inflight:
                self.errors += 1
                self.run.bad_reply(self, line)
                continue
            seq, sent, start, counted = popleft()
            if (
                len(line) == len(sent) + _PREFIX_LEN
                and line.endswith(sent)
                and line.startswith(REPLY_PREFIX)
            ):
                if counted:
                    record((now - start) // 1000)
                    good += 1
            else:
                self.errors += 1
                self.run.bad_reply(self, line)
            if log is not None:
                log(("reply", now, self.conn, seq, line, now - start))
        if good:
            self.replies += good
            self.last_reply_ns = now
        if self.done:
            return
        if self.closed_loop:
            want = self.pipeline - len(inflight)
            if want > 0 and self.budget is None and self.run.sending:
                self.send(want, now)  # the usual case of refill(), without the call
            else:
                self.refill(now)
        elif not inflight and not self.run.sending:
            self.finish()

    # -- ending -------------------------------------------------------------------

    def finish(self) -> None:
        """All replies are in and nothing more is to be sent: close."""
        if not self.done:
            self.done = True
            self.transport.loseConnection()
            self.run.protocol_done(self)

    def abandon(self) -> None:
        """Give up on the replies still missing (they count as errors) and abort."""
        if not self.done:
            self.errors += len(self.inflight)
            self.inflight.clear()
            self.done = True
            if self.connected:
                self.transport.abortConnection()
            self.run.protocol_done(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        if not self.done:
            self.errors += len(self.inflight)
            self.inflight.clear()
            self.done = True
            self.run.connection_lost(self, reason)


class OpenLoop:
    """The fixed schedule of ``--rate``: message k due at start + k/R on connection k mod N."""

    def __init__(self, run: LoadRun, start_ns: int) -> None:
        plan = run.plan
        assert plan.rate is not None
        self.run = run
        self.start_ns = start_ns
        self.interval_ns = 1e9 / plan.rate
        if plan.messages is not None:
            warm = math.ceil(plan.rate * plan.warmup)
            self.total = warm + plan.messages * plan.connections
        else:
            self.total = math.ceil(plan.rate * (plan.warmup + (plan.duration or 0.0)))
        self.next = 0  # the first message not sent yet
        self.call: IDelayedCall | None = None

    def due_time(self, k: int) -> int:
        return self.start_ns + int(k * self.interval_ns)

    def due_count(self, now: int) -> int:
        """How many messages are due at ``now``: those with ``due_time(k) <= now``.

        The float estimate is corrected against :meth:`due_time` itself, so
        that the next timer is always strictly in the future (a timer at zero
        delay that sends nothing would spin).
        """
        due = min(self.total, max(0, int((now - self.start_ns) / self.interval_ns) + 1))
        while due < self.total and self.due_time(due) <= now:
            due += 1
        while due > 0 and self.due_time(due - 1) > now:
            due -= 1
        return due

    def tick(self) -> None:
        self.call = None
        run = self.run
        now = run.now_ns()
        due = self.due_count(now)
        first, self.next = self.next, max(due, self.next)
        if due > first:
            protocols = run.protocols
            n = len(protocols)
            for index, proto in enumerate(protocols):
                ks = range(first + (index - first) % n, due, n)
                if not ks:
                    continue
                if proto.done:
                    # The connection is gone: its share of the schedule cannot be sent.
                    run.unsent += len(ks)
                    continue
                proto.send(len(ks), now, [self.due_time(k) for k in ks])
        if self.next >= self.total:
            run.stop_sending()
            return
        delay = (self.due_time(self.next) - run.now_ns()) / 1e9
        self.call = run.clock.callLater(max(delay, 0.0), self.tick)

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class LoadRun:
    """The shared state of one load run over ``plan.connections`` connections."""

    def __init__(
        self,
        plan: LoadPlan,
        clock: IReactorTime,
        now_ns: Callable[[], int] = time.perf_counter_ns,
        log: ClientLog | None = None,
        on_tick: Callable[[LoadRun], None] | None = None,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.now_ns = now_ns
        self.log = log
        self.on_tick = on_tick
        self.recorder = Recorder()
        self.protocols: list[LoadProtocol] = []
        self.sending = False
        self.started = False
        self.start_ns = 0
        #: Messages sent (closed loop) or due (open loop) from this time on are counted.
        self.measure_from = 1 << 62
        self.end_ns = 0
        self.unsent = 0  # open loop: messages due on a connection already gone
        self.problems: list[str] = []  # the first few, word for word
        self.problem_count = 0
        self.lost = 0  # connections dropped before their end
        self.finished: Deferred[None] = Deferred()
        self._open = 0
        self._stop_call: IDelayedCall | None = None
        self._schedule: OpenLoop | None = None
        self._ticker: LoopingCall | None = None
        self._cpu0 = 0.0
        self._cpu = 0.0
        self._last_progress = 0  # replies + errors at the last tick with progress
        self._last_progress_ns = 0

    # -- the connections ----------------------------------------------------------

    def build_protocols(self) -> list[LoadProtocol]:
        """One protocol per connection, ids ``conn_offset + 1 ...``."""
        base = self.plan.conn_offset
        self.protocols = [LoadProtocol(self, base + i + 1) for i in range(self.plan.connections)]
        self._open = len(self.protocols)
        return self.protocols

    def protocol_done(self, proto: LoadProtocol) -> None:
        self._open -= 1
        if self._open == 0 and self.started:
            self._end()

    def connection_lost(self, proto: LoadProtocol, reason: Failure) -> None:
        self.lost += 1
        self._problem(f"connection #{proto.conn} lost: {why_lost(reason)}")
        self.protocol_done(proto)

    def bad_reply(self, proto: LoadProtocol, line: bytes) -> None:
        self._problem(f"connection #{proto.conn}: unexpected reply {line[:80]!r}")

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)

    # -- running ------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start sending; the result fires once every connection has finished."""
        plan = self.plan
        now = self.now_ns()
        self.started = True
        self.sending = True
        self._cpu0 = cpu_seconds()
        self.start_ns = self._last_progress_ns = now
        self.measure_from = now + int(plan.warmup * 1e9)
        self._ticker = LoopingCall(self.tick)
        self._ticker.clock = self.clock
        self._ticker.start(TICK, now=False)
        if plan.rate is not None:
            self._schedule = OpenLoop(self, now)
            self._schedule.tick()
        else:
            if plan.duration is not None:
                self._stop_call = self.clock.callLater(
                    plan.warmup + plan.duration, self.stop_sending
                )
            for proto in self.protocols:
                if not proto.done:
                    proto.refill(now)
        if self._open == 0 and not self.finished.called:
            self._end()
        return self.finished

    def stop_sending(self) -> None:
        """No new messages from now on; connections close once their replies are in."""
        self.sending = False
        for proto in self.protocols:
            if not proto.done and not proto.inflight:
                proto.finish()

    def tick(self) -> None:
        """Fold round trips into the histogram, flush the log, watch for a stall."""
        self.recorder.fold()
        if self.log is not None:
            self.log.flush()
        now = self.now_ns()
        progress = sum(p.replies + p.errors for p in self.protocols)
        if progress != self._last_progress:
            self._last_progress, self._last_progress_ns = progress, now
        elif now - self._last_progress_ns >= self.plan.timeout * 1e9 and any(
            p.inflight for p in self.protocols
        ):
            self.give_up(f"no reply for {self.plan.timeout:g} s")
            return
        if self.on_tick is not None:
            self.on_tick(self)

    def give_up(self, why: str) -> None:
        missing = sum(len(p.inflight) for p in self.protocols if not p.done)
        self.problems.insert(0, f"{missing} replies missing: {why}")
        self.problem_count += 1
        self.sending = False
        for proto in self.protocols:
            proto.abandon()
        if not self.finished.called:
            self._end()

    def _end(self) -> None:
        self._cpu = cpu_seconds() - self._cpu0
        for call in (self._stop_call,):
            if call is not None and call.active():
                call.cancel()
        if self._schedule is not None:
            self._schedule.cancel()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self.sending = False
        self.recorder.fold()
        if self.log is not None:
            self.log.flush()
        self.end_ns = self.now_ns()
        if not self.finished.called:
            self.finished.callback(None)

    # -- results ------------------------------------------------------------------

    def completed(self) -> int:
        """Counted replies so far (for a progress bar)."""
        return sum(p.replies for p in self.protocols)

    def summary(self) -> Summary:
        """Counted replies over the window from ``measure_from`` to the last of them."""
        self.recorder.fold()
        last = max((p.last_reply_ns for p in self.protocols), default=0)
        end = last if last > self.measure_from else self.end_ns
        return Summary(
            messages=sum(p.replies for p in self.protocols),
            errors=sum(p.errors for p in self.protocols) + self.unsent,
            duration_s=max(end - self.measure_from, 0) / 1e9,
            connections=len(self.protocols),
            histogram=self.recorder.histogram,
            cpu_s=self._cpu,
            problems=list(self.problems)
            + (
                [f"{self.problem_count - len(self.problems)} more"]
                if self.problem_count > len(self.problems)
                else []
            ),
        )
