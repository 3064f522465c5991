"""Load runs: many connections, closed or open loop, every round trip recorded.

A :class:`LoadRun` owns what the connections share (plan, clock, recorder,
log, counters); each connection is a
:class:`~chatlog.client.loadconn.LoadProtocol`.  Nothing here opens a socket: :mod:`chatlog.client.runner` connects the protocols, and tests
drive them over ``StringTransport`` with a ``task.Clock``.

Closed loop (no ``--rate``): each connection keeps ``pipeline`` messages in
flight; the replies of one read are matched, then as many new messages are
sent with one write.  Open loop (``--rate R``): the schedule of
:mod:`chatlog.client.schedule` sends every due message, and latency counts
from when it was due.

What is counted where: a reply that is ``--expect`` plus its message is a
round trip; any other line is an error, except chatlog's refusal of a
connection (``ERROR server busy``...), which counts that connection as
refused, once, and nothing else.  A run that gives up (no reply within
``--timeout``) counts the messages still in flight as errors; an interrupted
run (Ctrl-C) counts them as unanswered, and closes its connections without
calling them lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from chatlog.client.clientlog import ClientLog
from chatlog.client.loadconn import LoadProtocol
from chatlog.client.plan import MESSAGE_ID, LoadPlan, payload, why_lost
from chatlog.client.schedule import OpenLoop
from chatlog.client.stats import Recorder, Summary, cpu_seconds, error_kinds

__all__ = ["MESSAGE_ID", "TICK", "LoadPlan", "LoadProtocol", "LoadRun", "payload", "why_lost"]

#: Seconds between folds of the histogram, stall checks and progress updates.
TICK = 0.2
#: Connection problems kept word for word; beyond them only counted.
_MAX_PROBLEMS = 5


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
        if log is not None:
            log.describe(plan.size, plan.expect, derive_sent=plan.rate is None)
        self.on_tick = on_tick
        #: Called when the measured window opens (after --warmup), and at the end.
        self.on_measure: Callable[[LoadRun], None] | None = None
        self.on_end: Callable[[LoadRun], None] | None = None
        self.recorder = Recorder()
        self.protocols: list[LoadProtocol] = []
        self.sending = False
        self.started = False
        self.start_ns = 0
        #: Messages sent (closed loop) or due (open loop) from this time on are counted.
        self.measure_from = 1 << 62
        self.end_ns = 0
        self.unsent = 0  # open loop: messages due on a connection already lost
        self.refused = 0  # connections the server refused
        self.refusal = ""  # the server's words, the last time
        self.unanswered = 0  # messages in flight when the run was interrupted
        self.interrupted = False
        self.problems: list[str] = []  # the first few, word for word
        self.problem_count = 0
        self.lost = 0  # connections dropped before their end
        self.finished: Deferred[None] = Deferred()
        self.schedule: OpenLoop | None = None
        self._open = 0
        self._calls: list[IDelayedCall] = []
        self._ticker: LoopingCall | None = None
        self._cpu0 = 0.0
        self._cpu = 0.0
        # The client's CPU over the measured window: (cpu s, ns) at its start and end.
        self._window: list[tuple[float, int]] = []
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

    def connection_refused(self, proto: LoadProtocol, line: bytes) -> None:
        self.refused += 1
        self.refusal = line.decode("ascii", "replace")
        self.protocol_done(proto)

    def not_sent(self, proto: LoadProtocol, count: int) -> None:
        """Open loop: ``count`` messages were due on a connection that is gone."""
        if not proto.refused:
            self.unsent += count  # a refused connection is counted once, as refused

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
        self.measure_from = now + round(plan.warmup * 1e9)
        self._ticker = LoopingCall(self.tick)
        self._ticker.clock = self.clock
        self._ticker.start(TICK, now=False)
        if self.log is not None:
            self.log.watermark = self.watermark(now)
            self.log.start_handing_over(self.clock)
        if plan.warmup > 0:
            self._calls.append(self.clock.callLater(plan.warmup, self._measuring))
        else:
            self._measuring()
        if plan.rate is not None:
            self.schedule = OpenLoop(self, now)
            self.schedule.tick()
        else:
            if plan.duration is not None:
                self._calls.append(
                    self.clock.callLater(plan.warmup + plan.duration, self.stop_sending)
                )
            for proto in self.protocols:
                if not proto.done:
                    proto.refill(now)
        if self._open == 0 and not self.finished.called:
            self._end()
        return self.finished

    def _measuring(self) -> None:
        if not self._window:
            self._window.append((cpu_seconds(), self.now_ns()))
            if self.on_measure is not None:
                self.on_measure(self)

    def stop_sending(self) -> None:
        """No new messages from now on; connections close once their replies are in."""
        if self.sending and len(self._window) == 1:
            self._window.append((cpu_seconds(), self.now_ns()))
        self.sending = False
        for proto in self.protocols:
            if not proto.done and not proto.inflight:
                proto.finish()

    def watermark(self, now: int) -> int:
        """Closed loop: the send time of the oldest message in flight (the log waits for it)."""
        if self.plan.rate is not None:
            return now
        return min([now, *(p.inflight[0][2] for p in self.protocols if p.inflight)])

    def tick(self) -> None:
        """Fold round trips into the histogram, hand the log on, watch for a stall."""
        self.recorder.fold()
        now = self.now_ns()
        if self.log is not None:
            # Between ticks the log hands records over with this watermark.
            self.log.watermark = self.watermark(now)
            self.log.flush(self.log.watermark)
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
        self._stop_all(unanswered=False)

    def interrupt(self) -> None:
        """Ctrl-C: stop now; messages in flight are unanswered, connections closed by us."""
        if self.finished.called:
            return
        self.interrupted = True
        if not self.started:
            # Still connecting (or waiting for --procs' go): nothing was measured.
            self.started = True
        self._stop_all(unanswered=True)

    def _stop_all(self, unanswered: bool) -> None:
        self.sending = False
        for proto in self.protocols:
            proto.abandon(unanswered=unanswered)
        if not self.finished.called:
            self._end()

    def _end(self) -> None:
        if self.finished.called:
            return
        self._cpu = cpu_seconds() - self._cpu0
        if len(self._window) == 1:
            self._window.append((cpu_seconds(), self.now_ns()))
        for call in self._calls:
            if call.active():
                call.cancel()
        if self.schedule is not None:
            self.schedule.cancel()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self.sending = False
        self.recorder.fold()
        if self.log is not None:
            self.log.stop_handing_over()
            self.log.flush()
        self.end_ns = self.now_ns()
        if self.on_end is not None:
            self.on_end(self)
        self.finished.callback(None)

    # -- results ------------------------------------------------------------------

    def completed(self) -> int:
        """Counted replies so far (for a progress bar)."""
        return sum(p.replies for p in self.protocols)

    def errors(self) -> int:
        """Errors so far: bad replies, replies missing, messages that could not be sent."""
        return sum(p.errors for p in self.protocols) + self.unsent

    def errors_by_kind(self) -> dict[str, int]:
        """The errors by kind (and the refused connections): what the summary shows."""
        timeout = sum(p.timeouts for p in self.protocols)
        dropped = sum(p.dropped for p in self.protocols) + self.unsent
        return error_kinds(
            refused=self.refused,
            timeout=timeout,
            error_reply=self.errors() - timeout - dropped,
            dropped=dropped,
        )

    def cpu_fraction(self) -> float | None:
        """The client's CPU over the measured window, as a share of one core."""
        if len(self._window) < 2:
            return None
        (cpu0, t0), (cpu1, t1) = self._window
        return (cpu1 - cpu0) / ((t1 - t0) / 1e9) if t1 > t0 else None

    def summary(self) -> Summary:
        """Counted replies over the window from ``measure_from`` to the last of them."""
        histogram = self.recorder.total()
        last = max((p.last_reply_ns for p in self.protocols), default=0)
        end = last if last > self.measure_from else self.end_ns
        problems = list(self.problems)
        if self.problem_count > len(self.problems):
            problems.append(f"{self.problem_count - len(self.problems)} more")
        if self.refused:
            refused = "1 connection" if self.refused == 1 else f"{self.refused} connections"
            problems.insert(0, f"{refused} refused by the server: {self.refusal}")
        return Summary(
            messages=sum(p.replies for p in self.protocols),
            errors=self.errors(),
            duration_s=max(end - self.measure_from, 0) / 1e9,
            connections=len(self.protocols),
            histogram=histogram,
            cpu_s=self._cpu,
            problems=problems,
            refused=self.refused,
            by_kind=self.errors_by_kind(),
            unanswered=self.unanswered,
            interrupted=self.interrupted,
            offered=self.plan.rate,
            late=self.schedule.late.total() if self.schedule is not None else None,
            cpu_fraction=self.cpu_fraction(),
        )
