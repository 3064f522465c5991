"""One connection of a load run: send, match each reply to its message, time it.

A :class:`LoadProtocol` belongs to a :class:`chatlog.client.load.LoadRun`,
which holds what the connections share (plan, clock, recorder, log).  Its
errors are counted by kind: an error reply (any line that is not the
expected reply), a timeout (no reply within ``--timeout``: the run gave
up), or dropped (the connection was lost with messages in flight).
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from chatlog.client.clientlog import REPLY_LINE, REPLY_RECORD, SENT, SENT_RECORD
from chatlog.client.plan import REFUSALS

if TYPE_CHECKING:
    from chatlog.client.load import LoadRun

pack_reply = REPLY_RECORD.pack
pack_sent = SENT_RECORD.pack


class LoadProtocol(Protocol):
    """One connection of a load run: send, match replies, time them."""

    transport: Any

    def __init__(self, run: LoadRun, conn: int) -> None:
        self.run = run
        self.conn = conn
        self.size = run.plan.size
        self.pipeline = run.plan.pipeline
        self.expect = run.plan.expect
        self.reply_len = len(self.expect) + self.size
        #: Counted messages still to send (closed loop with --messages), else None.
        self.budget = run.plan.messages if run.plan.rate is None else None
        self.closed_loop = run.plan.rate is None
        #: (seq, payload, start ns, counted) of each message awaiting its reply, in order.
        self.inflight: deque[tuple[int, bytes, int, bool]] = deque()
        self.buffer = b""
        self.seq = 0
        self.replies = 0  # counted replies that matched
        self.errors = 0  # every kind: error replies, timeouts, dropped
        self.timeouts = 0  # in flight when the run gave up
        self.dropped = 0  # in flight when the connection was lost
        self.last_reply_ns = 0
        self.connected = False
        self.refused = False
        self.done = False
        self._now = run.now_ns
        self._record = run.recorder.pending.append
        self._log = run.log.pending.append if run.log is not None else None
        # A reply's record is packed bytes, not a tuple: see chatlog.client.clientlog.
        self._log_reply = run.log.replies.extend if run.log is not None else None
        self._log_sent = run.log.sends.extend if run.log is not None else None

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
            # (Its log record is made from the reply: see chatlog.client.clientlog.)
            self.seq = first
            message = (b"c%d-s%d-" % (conn, first)).ljust(size, b"x")
            self.transport.write(message + b"\n")
            counted = now >= measure_from
            self.inflight.append((first, message, now, counted))
            if counted and self.budget is not None:
                self.budget -= 1
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
            if self._log_sent is not None:
                self._log_sent(pack_sent(conn, first, count, now))

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
        log_reply = self._log_reply
        pack = pack_reply
        expect = self.expect
        good = 0
        for line in lines:
            if not inflight:
                if self._unexpected(line, now):
                    return
                continue
            seq, sent, start, counted = popleft()
            if len(line) == self.reply_len and line.endswith(sent) and line.startswith(expect):
                if counted:
                    record((now - start) // 1000)
                    good += 1
                if log_reply is not None:
                    log_reply(pack(self.conn, seq, start, now))
            elif line in REFUSALS:
                # Sent at connect, before any reply: it answers none of our messages.
                inflight.appendleft((seq, sent, start, counted))
                self.refuse(line, now)
                return
            else:
                self.errors += 1
                self.run.bad_reply(self, line)
                if self._log is not None:
                    self._log((REPLY_LINE, self.conn, seq, start, now, line))
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

    def _unexpected(self, line: bytes, now: int) -> bool:
        """A line no message awaits, or a refusal (then True: read no further)."""
        if line in REFUSALS:
            self.refuse(line, now)
            return True
        self.errors += 1
        self.run.bad_reply(self, line)
        if self._log is not None:
            self._log((REPLY_LINE, self.conn, 0, now, now, line))
        return False

    # -- ending -------------------------------------------------------------------

    def _log_unanswered(self) -> None:
        """In the closed loop a message's Sent record comes with its reply: log those with none."""
        if self._log is not None and self.closed_loop:
            for seq, _, start, _ in self.inflight:
                self._log((SENT, self.conn, seq, 1, start))

    def finish(self) -> None:
        """All replies are in and nothing more is to be sent: close."""
        if not self.done:
            self.done = True
            self.transport.loseConnection()
            self.run.protocol_done(self)

    def refuse(self, line: bytes, now: int) -> None:
        """The server refused this connection: one refusal, its messages are no one's errors."""
        if self._log is not None:
            self._log((REPLY_LINE, self.conn, 0, now, now, line))
        self._log_unanswered()
        self.inflight.clear()
        self.refused = self.done = True
        self.transport.loseConnection()
        self.run.connection_refused(self, line)

    def abandon(self, unanswered: bool = False) -> None:
        """Give up on the replies still missing and abort.

        They are errors (no reply within ``--timeout``), or with ``unanswered``
        (the run was interrupted) merely unanswered.
        """
        if not self.done:
            self._log_unanswered()
            if unanswered:
                self.run.unanswered += len(self.inflight)
            else:
                self.errors += len(self.inflight)
                self.timeouts += len(self.inflight)
            self.inflight.clear()
            self.done = True
            if self.connected:
                self.transport.abortConnection()
            self.run.protocol_done(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        if not self.done:
            self._log_unanswered()
            self.errors += len(self.inflight)
            self.dropped += len(self.inflight)
            self.inflight.clear()
            self.done = True
            self.run.connection_lost(self, reason)
