"""The open loop's fixed schedule (``--rate R``), and how late the client kept it.

Message *k* of the run is due at ``start + k/R`` on connection ``k mod N``;
a timer sends every due message, one write per connection, and a message's
latency counts from when it was *due*, so a stalled server shows up in the
percentiles instead of silently slowing the client down (coordinated
omission).

The same schedule tells on the client: a message that leaves after its due
time left late because the client was busy (or the machine was), not the
server.  Each counted message's lateness is recorded, so that a run whose
limit was the client can say so instead of passing its lateness off as the
server's latency.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall

from chatlog.client.stats import Recorder

if TYPE_CHECKING:
    from chatlog.client.load import LoadRun


class OpenLoop:
    """The fixed schedule of ``--rate``: message k due at start + k/R on connection k mod N."""

    def __init__(self, run: LoadRun, start_ns: int) -> None:
        plan = run.plan
        assert plan.rate is not None
        self.run = run
        self.start_ns = start_ns
        self.interval_ns = 1e9 / plan.rate
        # Rounded first: 2000 * (0.3 + 1.6) is 3800.0000000000005 in floats, not 3801 messages.
        if plan.messages is not None:
            warm = math.ceil(round(plan.rate * plan.warmup, 6))
            self.total = warm + plan.messages * plan.connections
        else:
            self.total = math.ceil(round(plan.rate * (plan.warmup + (plan.duration or 0.0)), 6))
        self.next = 0  # the first message not sent yet
        #: How late each counted message was sent (µs).
        self.late = Recorder()
        #: The first message due in the measured window (after --warmup).
        self.first_counted = self.due_count(run.measure_from - 1)
        self.call: IDelayedCall | None = None

    def due_time(self, k: int) -> int:
        return self.start_ns + int(k * self.interval_ns)

    def due_count(self, now: int) -> int:
        """How many messages are due at ``now``: those with ``due_time(k) <= now``.

        The float estimate is corrected against :meth:`due_time` itself, so
        that the next timer is always strictly in the future (a timer at zero
        delay that sends nothing would spin).
        """
        if now < self.start_ns:
            return 0
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
            counted = max(first, self.first_counted)
            if due > counted:
                start, step = now - self.start_ns, self.interval_ns
                self.late.pending.extend(
                    [(start - int(k * step)) // 1000 for k in range(counted, due)]
                )
            protocols = run.protocols
            n = len(protocols)
            for index, proto in enumerate(protocols):
                ks = range(first + (index - first) % n, due, n)
                if not ks:
                    continue
                if proto.done:
                    # The connection is gone: its share of the schedule cannot be sent.
                    run.not_sent(proto, len(ks))
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
