"""One client connection: answer every line, and only after its record is in the log.

:class:`ChatProtocol` reads ``\\n``-terminated lines (a trailing ``\\r`` is
dropped) and answers each with ``Server received: <line>\\n``.  It describes
what happens (connect, message, disconnect, limits) as event dicts for the
log (a :class:`chatlog.log.LogWriter`), and keeps the one promise that
matters: a reply leaves only after its record was written.

How a read becomes replies ("ack implies logged", group commit):

1. ``dataReceived`` stages the complete lines (at most :data:`LINES_PER_TURN`)
   with the log in one piece (how: :mod:`chatlog.server.lines`), then asks
   the log to call :meth:`ChatProtocol.logWritten` once that batch is written;
2. at the start of the next reactor turn the log writes every staged record
   of every connection with one ``write(2)`` and calls back;
3. ``logWritten(ok)`` sends all replies of the read with one
   ``transport.write`` (``ERROR log unavailable`` per line if the write
   failed), then stages the next slice of lines held back, if any.

What one client can make the server hold is bounded: replies queued up to
its buffer size (4 or 16 KiB, see ``ChatFactory``; then it is not read
until they drain), one read of lines not handled yet, its unfinished line.
A connection's life is a :class:`Phase`: waiting for its PROXY header,
open, closing, closed; :class:`~chatlog.server.closing.Ending` says why it
is closing, and :mod:`chatlog.server.closing` how it closes without a reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from chatlog.log import Event
from chatlog.server.closing import Ending, Phase, ServerClose, close_when_sent
from chatlog.server.lines import LINES_PER_TURN, too_long, whole
from chatlog.server.proxy import BadHeader, HeaderReader
from chatlog.server.proxy import peer_address as peer_address  # also for chatlog.server.service
from chatlog.wire import (
    DELIMITER,
    ERROR_LOG_UNAVAILABLE,
    ERROR_TIMEOUT,
    REPLY_PREFIX,
    REPLY_SEPARATOR,
    error_line_too_long,
)

if TYPE_CHECKING:
    from chatlog.server.factory import ChatFactory
    from chatlog.server.quota import AddressQuota


# The reply write, once per read, is the hottest line of the server.  Built
# inline from names bound here, it measured 1.7% fewer instructions per
# message than through a helper or the imported names (CPython 3.11, callgrind).
_PREFIX, _SEPARATOR, _DELIMITER = REPLY_PREFIX, REPLY_SEPARATOR, DELIMITER
# What a newline grows by as a reply separator: how replies count lines.
_GROWTH = len(REPLY_SEPARATOR) - len(DELIMITER)


# Looking up an enum member costs ~55 ns in Python 3.11, as much as the rest
# of a read's bookkeeping: the per-read checks compare against this instead.
_OPEN = Phase.OPEN


@implementer(IHalfCloseableProtocol, IPushProducer)
class ChatProtocol(TwistedProtocol):
    """One client connection.

    Not a ``LineReceiver``: that calls ``lineReceived`` once per line, and the
    server is fast because it stages all lines of a read at once and answers
    them with one write.
    """

    transport: Any
    factory: ChatFactory
    # Class defaults, set on an instance only if ever: CPython 3.11 shares one
    # key table among the instances' dicts up to 29 attributes; past it each
    # connection had a dict of its own (1,584 bytes, not 296) and slower
    # attribute reads (5% of closed-loop throughput with quotas on).
    quota: AddressQuota | None = None  # set at admission when there is one
    ending: Ending | None = None  # how the connection ended, once it has
    _header: HeaderReader | None = None  # the PROXY header, until admitted
    _closing: ServerClose | None = None  # a close the server decided
    send_full_at = 0.0  # since when the transport's send buffer is full
    plain_reads = True  # the whole-read lane (chatlog.server.lines); tests compare without

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.log = factory.log
        self._stage_messages = factory.log.stageMessages  # once, not per read
        self.clock = factory.clock
        self.max_line = factory.max_line
        self.phase = Phase.OPEN
        self.conn = 0
        self.ip = ""
        self.port = 0
        self.messages = 0
        self.connected_at = 0.0
        self.last_activity = 0.0
        #: When the unfinished line now in the buffer began (None: no such line).
        self.line_started: float | None = None
        # Bytes not handled yet: the unfinished line and, while _backlogged,
        # the complete lines before it that later turns handle.
        self._buffer = b""
        self._backlogged = False
        self._now = 0.0  # arrival time of the read being handled
        # Replies awaiting the log write: a line, or a read's lines joined by _SEPARATOR.
        self._unacked: list[bytes] = []
        self._notice: bytes | None = None  # the ERROR line sent before a close
        self._log_callback_due = False  # registered with log.ackAfterWrite
        self._client_done_sending = False  # the client shut its write side
        # Flow control: the transport asked us to stop (since when); we asked
        # it; the most it reads at once (ChatFactory.size_buffers).
        self.send_buffer_full = False
        self.reading_paused, self.read_size = False, factory.small_buffer

    @property
    def reading(self) -> bool:
        """Whether bytes from the client still count (not closing, not closed)."""
        return self.phase in (Phase.AWAITING_PEER, Phase.OPEN)

    # -- connection lifetime ------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_at = self.last_activity = self.clock.seconds()
        self.ip, self.port = peer_address(self.transport.getPeer())
        if self.factory.peer_from_proxy_header:
            # The peer is a balancer: admit and log the client its header names.
            self.phase = Phase.AWAITING_PEER
            self._header = HeaderReader()
            self.factory.number(self)
            return
        self._admit()

    def _admit(self) -> bool:
        """Count the connection in, or refuse it; say whether it was admitted."""
        self.phase = Phase.OPEN
        refusal = self.factory.admit(self)
        if refusal is not None:
            event = {**self._fields("rejected"), "reason": refusal.reason, "limit": refusal.limit}
            self._policy_close(event, refusal.notice, Ending.REFUSED)
            return False
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # Replies are small and sent once per turn: Nagle would only delay them.
            set_no_delay(True)
        self.transport.registerProducer(self, True)
        self.log(self._fields("connect"))
        return True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._closing is not None:
            self._closing.cancel()
        was, self.phase = self.phase, Phase.CLOSED
        self.factory.socket_closed()
        clean = reason.check(ConnectionDone) is not None
        policy = self.ending in (Ending.POLICY, Ending.SHUTDOWN)
        how = "closed" if policy else "clean" if clean else "lost"
        # Lines received are logged although no reply can reach the client any
        # more (a slice a turn, like any others); a clean end ends a last line.
        held = self._buffer if was is Phase.OPEN else b""
        if held and clean and not held.endswith(_DELIMITER):
            held += _DELIMITER
        self._buffer, self._backlogged = held[: held.rfind(_DELIMITER) + 1], False
        self._log_lost_lines(how, round(self.clock.seconds() - self.connected_at, 6))

    def _log_lost_lines(self, how: str, seconds: float) -> None:
        """Log the next slice of a lost connection's lines; after the last, its end."""
        lines = self._buffer.split(_DELIMITER, LINES_PER_TURN)
        self._buffer = lines.pop()  # the buffer ends with a line's end
        if self._stage(lines):
            self.factory.count_limit("line_too_long")
            self.log({**self._fields("line_too_long"), "limit": self.max_line})
            self._buffer = b""
        self._unacked = []
        if self._buffer:
            self.clock.callLater(0, self._log_lost_lines, how, seconds)
            return
        if self.factory.live.get(self.conn) is self:  # not refused, nor before a PROXY header
            event = {**self._fields("disconnect"), "how": how, "seconds": seconds}
            self.log({**event, "messages": self.messages})
        self.factory.forget(self)  # last: it may tell a stopping server that all are gone

    def readConnectionLost(self) -> None:
        """The client shut its write side: answer what it sent, then close."""
        self._client_done_sending = True
        if not self.reading:
            if self._closing is not None:
                self._closing.client_closed()  # the end of the drain after a server close
            return
        if self._buffer and not self._backlogged:
            # End of stream ends the last line too (after a backlog, _next_slice does).
            last, self._buffer = self._buffer, b""
            self.line_started = None
            self._handle_lines([last])
        self._close_if_done()

    def writeConnectionLost(self) -> None:
        """Our write side is shut (a server close): the client's close or the grace ends it."""

    # -- the PROXY header (haproxy: ports) ---------------------------------------

    def _read_header(self, data: bytes) -> bytes:
        """Admit the client a whole, valid PROXY header names; return the bytes after it."""
        now = self.last_activity = self.clock.seconds()
        assert self._header is not None  # made with the AWAITING_PEER phase
        try:
            read = self._header.feed(data)
        except BadHeader as bad:
            self._refuse_header(bad.reason)
            return b""
        if read is None:
            if self.line_started is None:
                self.line_started = now
            return b""
        header, rest = read
        self.line_started = self._header = None
        if header.source is not None:
            self.ip, self.port = header.source
        return rest if self._admit() else b""

    def _refuse_header(self, reason: str) -> None:
        """Log a ``bad_header`` event with the connection's real peer, and close."""
        self.factory.count_limit("bad_header")
        self.phase = Phase.CLOSING
        self.ending = Ending.REFUSED
        self.log({**self._fields("bad_header"), "reason": reason})
        # Nothing was sent and no producer is registered: this closes at once.
        self.transport.loseConnection()

    # -- reading lines ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.phase is not _OPEN:
            if self.phase is not Phase.AWAITING_PEER:
                return
            data = self._read_header(data)
            if not data:
                return
        now = self.clock.seconds()
        self._now = self.last_activity = now
        if self._buffer:
            if self._backlogged:
                # Read although reading is paused (TLS may still hand over
                # what it had decrypted): it waits behind the held-back lines.
                if self.quota is not None:
                    self.quota.take(len(data), data.count(_DELIMITER), now)
                self._buffer += data
                return
            data = self._buffer + data
        # rpartition and replace find newlines by memchr; split looks at every byte.
        body, ended, buffer = data.rpartition(_DELIMITER)
        replies = body.replace(_DELIMITER, _SEPARATOR)
        count = (len(replies) - len(body)) // _GROWTH + 1  # complete lines, if ended
        if self.quota is not None:  # (the buffer held no newline: it was a line's start)
            self.quota.take(len(data) - len(self._buffer), count if ended else 0, now)
        if count == 1:
            lines = [body] if ended else []
        elif self.plain_reads and whole(body, count, self.max_line):
            # No line needs a look of its own: staged whole (chatlog.server.lines).
            fields = {"event": "message", "time": now, "ip": self.ip, "port": self.port}
            fields["conn"], fields["seq"] = self.conn, self.messages + 1
            self.log.stagePlainLines(fields, body, count)
            self._unacked.append(replies)
            self.messages += count
            self.factory.messages_total += count
            lines = []
        else:
            lines = data.split(_DELIMITER, LINES_PER_TURN)
            buffer = lines.pop()
        self._buffer = buffer
        if (
            len(buffer) > self.max_line
            or len(lines) == LINES_PER_TURN
            or len(data) >= self.read_size
        ):
            self._unusual_read(lines, now, len(data), ended)
        elif ended:
            self.line_started = now if buffer else None
        elif self.line_started is None:
            self.line_started = now
        if lines or ended:
            self._handle_lines(lines)

    def _unusual_read(self, lines: list[bytes], now: float, size: int, ended: bytes) -> None:
        """A read that leaves lines for later turns, fills the buffer, or is over the limit."""
        buffer = self._buffer
        if len(lines) == LINES_PER_TURN and buffer:
            # The rest may hold more lines: later turns handle them a slice
            # each, and reading waits until they have (then a little at once).
            self._backlogged = True
            self.line_started = None
            self._update_reading()
            self.factory.size_buffers(self, self.factory.small_buffer)
            return
        if size >= self.read_size:  # long lines: read more at once
            self.factory.size_buffers(self, self.factory.large_buffer)
        if too_long(buffer, self.max_line):
            # Queued as a line: the lines before it are answered first, then
            # it closes the connection (nothing after it becomes a record).
            lines.append(buffer)
            self._buffer = b""
            self.line_started = None
        elif ended or self.line_started is None:
            self.line_started = now if buffer else None

    def _next_slice(self) -> None:
        """Handle the next LINES_PER_TURN lines held back; read again after the last."""
        lines = self._buffer.split(_DELIMITER, LINES_PER_TURN)
        buffer = self._buffer = lines.pop()
        if len(lines) < LINES_PER_TURN or not buffer:
            self._backlogged = False
            self._update_reading()
            if too_long(buffer, self.max_line) or (buffer and self._client_done_sending):
                # Over the limit (see _unusual_read), or ended by the end of the stream.
                lines.append(buffer)
                self._buffer = b""
            self.line_started = self.clock.seconds() if self._buffer else None
        self._handle_lines(lines)

    def _handle_lines(self, lines: list[bytes]) -> None:
        """Stage complete lines as messages; their replies go out after the write."""
        too_long = self._stage(lines)
        if too_long:
            self.factory.count_limit("line_too_long")
            event = {**self._fields("line_too_long"), "limit": self.max_line}
            self._policy_close(event, error_line_too_long(self.max_line), Ending.POLICY)
        if self._unacked and not self._log_callback_due:
            self._log_callback_due = True
            self.log.ackAfterWrite(self)

    def _stage(self, lines: list[bytes]) -> bool:
        """Stage the records of ``lines`` up to the first over-long one; say if there was one."""
        max_line = self.max_line
        messages: list[bytes] = []
        over = False
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]  # the limit counts the line without its ending
            if len(line) > max_line:
                over = True
                break
            messages.append(line)
        if messages:
            fields = {
                "event": "message",
                "time": self._now,
                "ip": self.ip,
                "port": self.port,
                "conn": self.conn,
                "seq": self.messages + 1,
            }
            self._stage_messages(fields, messages)
            self._unacked.extend(messages)
            self.messages += len(messages)
            self.factory.messages_total += len(messages)
        return over

    # -- answering, once the log has the records ------------------------------

    def logWritten(self, ok: bool) -> None:
        """The records of our lines are written (``ok``) or refused: answer them."""
        self._log_callback_due = False
        lines, self._unacked = self._unacked, []
        if lines:
            if ok:
                # Joined, not added: a read's replies are copied once more, not twice.
                self.transport.write(b"".join((_PREFIX, _SEPARATOR.join(lines), _DELIMITER)))
            else:
                # As many as lines: a piece staged whole holds several.
                count = _SEPARATOR.join(lines).count(_SEPARATOR) + 1
                self.transport.write(ERROR_LOG_UNAVAILABLE * count)
        if self._notice is not None:
            self.transport.write(self._notice)
            self._notice = None
            self._close_with_grace()
            return
        # Held-back lines wait while the replies already queued do not drain:
        # what a client that never reads makes us hold stays bounded.
        if self._backlogged and self.phase is _OPEN and not self.send_buffer_full:
            self._next_slice()
        self._close_if_done()

    # -- flow control (IPushProducer, registered with our transport) ----------

    def pauseProducing(self) -> None:
        """The transport's send buffer is full: stop reading until it drains."""
        if not self.send_buffer_full:
            self.send_buffer_full = True
            self.send_full_at = self.clock.seconds()
        self._update_reading()

    def resumeProducing(self) -> None:
        """The send buffer drained: go on with held-back lines, or read again."""
        self.send_buffer_full = False
        if self._backlogged and self.phase is _OPEN and not self._log_callback_due:
            self._next_slice()
            self._close_if_done()
        else:
            self._update_reading()

    def stopProducing(self) -> None:
        pass  # the connection is going away; connectionLost follows

    def throttle(self, paused: bool) -> None:
        """The address is over its quota: stop reading (lines read are still answered); or read."""
        if not paused and self.quota is not None:
            # A throttled client's lumps are its reads: small ones keep its rate smooth.
            small = self.factory.small_buffer
            self.factory.size_buffers(self, min(small, self.quota.paced_read()))
        self._update_reading()

    def _update_reading(self) -> None:
        quota = self.quota
        paused = self.send_buffer_full or self._backlogged or (quota is not None and quota.paused)
        if paused != self.reading_paused and self.reading:
            self.reading_paused = paused
            if paused:
                self.transport.pauseProducing()
            else:
                # Time the server spent not reading is not the client's:
                # its deadlines start again.
                now = self.clock.seconds()
                if self.line_started is not None:
                    self.line_started = now
                self.last_activity = now
                self.transport.resumeProducing()

    # -- closing ----------------------------------------------------------------

    def time_out(self, kind: str, seconds: float) -> None:
        """A deadline passed (see ``ChatFactory.overdue``): ``ERROR timeout``, an event, a close."""
        if self.phase is Phase.AWAITING_PEER:
            self._refuse_header(f"no complete PROXY header within {seconds:g} s")
            return
        self.factory.count_limit("timeout")
        event = {**self._fields("timeout"), "kind": kind, "seconds": seconds}
        self._policy_close(event, ERROR_TIMEOUT, Ending.POLICY)

    def _policy_close(self, event: Event, notice: bytes, ending: Ending) -> None:
        """Log why, send ``notice`` after any pending replies, then close."""
        self.phase = Phase.CLOSING
        self.ending = ending
        self._backlogged = False
        self._buffer = b""
        self.log(event)
        self._notice = notice
        if not self._log_callback_due:
            self._log_callback_due = True
            self.log.ackAfterWrite(self)

    def _close_if_done(self) -> None:
        """A client that shut its write side: close once its last replies are out."""
        if self._client_done_sending and not self._log_callback_due and not self._backlogged:
            if self.phase is not Phase.CLOSED:
                self.phase = Phase.CLOSING
            if self.ending is None:
                self.ending = Ending.CLIENT_DONE
            close_when_sent(self.transport)

    def _close_with_grace(self) -> None:
        """Close without a reset (see :mod:`~chatlog.server.closing`); abort after the grace."""
        if self.phase is Phase.CLOSED or self._closing is not None:
            return
        self.phase = Phase.CLOSING
        if self.ending is None:
            self.ending = Ending.SHUTDOWN
        self._closing = ServerClose(
            self.transport, self.clock, self.factory.close_grace, self._client_done_sending
        )

    def shutdown(self) -> None:
        """The server is stopping: close after the replies already due."""
        if self.phase is Phase.CLOSED or self._closing is not None:
            return
        self.phase = Phase.CLOSING
        self._backlogged = False
        self._buffer = b""
        if self.ending is not Ending.REFUSED and self._notice is None:
            self.ending = Ending.SHUTDOWN
        if self._log_callback_due:
            if self._notice is None:  # keep a policy close's ERROR line
                self._notice = b""  # logWritten closes once the replies are sent
        else:
            self._close_with_grace()

    def _fields(self, kind: str) -> dict[str, Any]:
        return {
            "event": kind,
            "time": self.clock.seconds(),
            "ip": self.ip,
            "port": self.port,
            "conn": self.conn,
        }
