"""The chatlog wire protocol: answer every line, log every connection and message.

:class:`ChatProtocol` reads ``\\n``-terminated lines (a trailing ``\\r`` is
dropped) and answers each with ``Server received: <line>\\n``.  Every
connection, message and disconnection is described as an event dict and
handed to the factory's *observer* (a :class:`chatlog.log.writer.LogWriter` in
the server, anything callable in tests).

"Ack implies logged": replies are not written when a line arrives.  The
protocol keeps the lines of this reactor turn, asks the observer to call
:meth:`ChatProtocol.logWritten` once their records are written, and only then
sends all their replies with one write.

:class:`ChatFactory` owns what is shared: the observer, the clock, connection
ids, the limits (line length, idle and line timeouts, total and per-address
connection counts) and the counters that metrics read.  Nothing here knows
about twistd, options or files.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatlog.log import Event
from chatlog.wire import (
    ERROR_LOG_UNAVAILABLE,
    ERROR_SERVER_BUSY,
    ERROR_TIMEOUT,
    ERROR_TOO_MANY_FROM_ADDRESS,
    error_line_too_long,
    replies,
)


class Observer(Protocol):
    """Where events go: the log writer (or a list's ``append`` in tests)."""

    def __call__(self, event: Event) -> None: ...

    def ackAfterWrite(self, waiter: ChatProtocol) -> None: ...


def peer_address(address: object) -> tuple[str, int]:
    """(ip, port) of a peer; ``("unix", 0)`` for a UNIX socket and the like."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host, address.port
    return "unix", 0


def _peer_known_later(transport: object) -> bool:
    """True for a HAProxy PROXY-protocol wrapper that has not read its header yet."""
    return (
        type(transport).__name__ == "HAProxyProtocolWrapper"
        and getattr(transport, "_proxyInfo", None) is None
    )


@implementer(IHalfCloseableProtocol, IPushProducer)
class ChatProtocol(LineOnlyReceiver):
    """One client connection."""

    delimiter = b"\n"
    #: Most lines handled per reactor turn.  A client that floods thousands of
    #: tiny lines in one read has the rest handled in later turns (and stops
    #: being read meanwhile), so it cannot delay everyone else's replies.
    LINES_PER_TURN = 250

    transport: Any

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.observer = factory.observer
        #: The log writer's entry for all lines of one read (a plain observer
        #: gets one event per line instead).
        self._stage_messages = getattr(factory.observer, "stageMessages", None)
        self.clock = factory.clock
        self.MAX_LENGTH = factory.max_line
        self.conn = 0
        self.ip = ""
        self.port = 0
        self.messages = 0
        self.connected_at = 0.0
        self.last_activity = 0.0
        #: When the unfinished line now in the buffer began (None: no such line).
        self.line_started: float | None = None
        self.rejected = False
        self.admitted = False  # counted in the factory's per-address table
        self.closed_by_server = False
        self._buffer = b""
        self._now = 0.0
        self._unacked: list[bytes] = []  # lines whose records await the log write
        self._backlog: list[bytes] = []  # complete lines held back for fairness
        self._notice: bytes | None = None  # the ERROR line sent before a policy close
        self._waiting = False  # registered with observer.ackAfterWrite
        self._closing = False  # a close has begun: read nothing more
        self._eof = False  # the client shut its write side
        self._transport_full = False  # the transport asked us to stop producing
        self._reading_paused = False
        self._abort_call: IDelayedCall | None = None
        self._awaiting_peer = False

    # -- connection lifetime ------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_at = self.last_activity = self.clock.seconds()
        if _peer_known_later(self.transport):
            # Behind a PROXY-protocol balancer the real client address is in
            # the header that comes first: admit and log once it is parsed.
            self._awaiting_peer = True
            self.factory.track(self)
            return
        self._admit()

    def _admit(self) -> None:
        self.ip, self.port = peer_address(self.transport.getPeer())
        refusal = self.factory.admit(self)
        if refusal is not None:
            reason, limit, notice = refusal
            self.rejected = True
            self._policy_close(
                {**self._fields("rejected"), "reason": reason, "limit": limit}, notice
            )
            return
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # Replies are small and sent once per turn: Nagle would only delay them.
            set_no_delay(True)
        self.transport.registerProducer(self, True)
        self.observer(self._fields("connect"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if not self._closing:
            # Lines already received are logged even though no reply can
            # reach the client any more; a clean EOF also ends a last line.
            pending = self._backlog
            if self._buffer and reason.check(ConnectionDone):
                pending = [*pending, self._buffer]
            self._backlog = []
            self._buffer = b""
            self._unacked_lines_only(pending)
        self._closing = True
        self.factory.forget(self)
        if self.rejected:
            return
        if self._awaiting_peer:
            # Closed before the PROXY header was complete: there is no client
            # address to speak of, and nothing was sent.
            return
        if self.closed_by_server:
            how = "closed"
        elif reason.check(ConnectionDone):
            how = "clean"
        else:
            how = "lost"
        self.observer(
            {
                **self._fields("disconnect"),
                "how": how,
                "messages": self.messages,
                "seconds": round(self.clock.seconds() - self.connected_at, 6),
            }
        )

    def readConnectionLost(self) -> None:
        """The client shut its write side: answer what it sent, then close."""
        self._eof = True
        if self._closing:
            return
        if self._buffer:
            # End of stream ends the last line too.
            last, self._buffer = self._buffer, b""
            self._add_lines([last])
        self._close_if_done()

    def writeConnectionLost(self) -> None:
        """The client will read nothing more: nothing left to do."""
        self._finish()

    # -- reading lines ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._awaiting_peer:
            self._awaiting_peer = False
            self._admit()
        if self._closing:
            return
        now = self.clock.seconds()
        self._now = self.last_activity = now
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        if lines:
            self.line_started = now if self._buffer else None
        elif self.line_started is None:
            self.line_started = now
        if len(self._buffer) > self.MAX_LENGTH:
            # Queue the over-long part as a line so that the lines before it
            # are answered first; handling it closes the connection, and
            # nothing read after it can ever become a record.
            lines.append(self._buffer)
            self._buffer = b""
        if self._backlog or len(lines) > self.LINES_PER_TURN:
            self._add_lines(lines)
        elif lines:
            self._handle_lines(lines)

    def _add_lines(self, lines: list[bytes]) -> None:
        """Handle complete lines now, up to LINES_PER_TURN; queue the rest."""
        if self._backlog:
            self._backlog.extend(lines)
            return
        if len(lines) > self.LINES_PER_TURN:
            self._backlog = lines[self.LINES_PER_TURN :]
            lines = lines[: self.LINES_PER_TURN]
            self._update_reading()
        self._handle_lines(lines)

    def _handle_lines(self, lines: list[bytes]) -> None:
        """Log complete lines as messages and keep them for the reply after the write."""
        max_length = self.MAX_LENGTH
        messages: list[bytes] = []
        too_long = None
        for line in lines:
            if len(line) > max_length:
                too_long = line
                break
            messages.append(line[:-1] if line[-1:] == b"\r" else line)
        if messages:
            first = self.messages + 1
            fields = {
                "event": "message",
                "time": self._now,
                "ip": self.ip,
                "port": self.port,
                "conn": self.conn,
                "seq": first,
            }
            if self._stage_messages is not None:
                # The log writer formats a read's lines in one piece.
                self._stage_messages(fields, messages)
            else:
                for seq, line in enumerate(messages, first):
                    self.observer({**fields, "seq": seq, "msg": line})
            self._unacked.extend(messages)
            self.messages += len(messages)
            self.factory.messages_total += len(messages)
        if too_long is not None:
            self.lineLengthExceeded(too_long)
        if self._unacked and not self._waiting:
            self._waiting = True
            self.observer.ackAfterWrite(self)

    def lineReceived(self, line: bytes) -> None:
        """One complete line (without its ``\\n``): log it, answer it after the write."""
        self._handle_lines([line])

    def _unacked_lines_only(self, lines: list[bytes]) -> None:
        """Log lines that can no longer be answered (the connection is gone)."""
        self._handle_lines(lines)
        self._unacked = []

    def lineLengthExceeded(self, line: bytes) -> None:
        self.factory.count_limit("line_too_long")
        self._policy_close(
            {**self._fields("line_too_long"), "limit": self.MAX_LENGTH},
            error_line_too_long(self.MAX_LENGTH),
        )

    # -- answering, once the log has the records ------------------------------

    def logWritten(self, ok: bool) -> None:
        """The records of our lines are written (``ok``) or refused: answer them."""
        self._waiting = False
        lines, self._unacked = self._unacked, []
        if lines:
            if ok:
                self.transport.write(replies(lines))
            else:
                self.transport.write(ERROR_LOG_UNAVAILABLE * len(lines))
        if self._notice is not None:
            self.transport.write(self._notice)
            self._notice = None
            self._close_with_grace()
            return
        if self._backlog and not self._closing:
            lines = self._backlog[: self.LINES_PER_TURN]
            del self._backlog[: self.LINES_PER_TURN]
            self._handle_lines(lines)
            self._update_reading()
        self._close_if_done()

    # -- flow control (IPushProducer, registered with our transport) ----------

    def pauseProducing(self) -> None:
        """The transport's send buffer is full: stop reading until it drains."""
        self._transport_full = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._transport_full = False
        self._update_reading()

    def stopProducing(self) -> None:
        pass  # the connection is going away; connectionLost follows

    def _update_reading(self) -> None:
        paused = self._transport_full or bool(self._backlog)
        if paused != self._reading_paused and not self._closing:
            self._reading_paused = paused
            if paused:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # -- closing ----------------------------------------------------------------

    def checkDeadlines(self, now: float) -> None:
        """Close the connection if it was idle, or trickled a line, too long."""
        if self._closing:
            return
        factory = self.factory
        if (
            factory.line_timeout
            and self.line_started is not None
            and now - self.line_started >= factory.line_timeout
        ):
            kind, seconds = "line", factory.line_timeout
        elif factory.idle_timeout and now - self.last_activity >= factory.idle_timeout:
            kind, seconds = "idle", factory.idle_timeout
        else:
            return
        factory.count_limit("timeout")
        self._policy_close(
            {**self._fields("timeout"), "kind": kind, "seconds": seconds}, ERROR_TIMEOUT
        )

    def _policy_close(self, event: dict[str, Any], notice: bytes) -> None:
        """Log why, send ``notice`` after any pending replies, then close."""
        self._closing = True
        self._backlog = []
        self._buffer = b""
        self.observer(event)
        self._notice = notice
        if not self._waiting:
            self._waiting = True
            self.observer.ackAfterWrite(self)

    def _close_if_done(self) -> None:
        if self._eof and not self._waiting and not self._backlog:
            self._finish()

    def _finish(self) -> None:
        """Close gracefully once what is buffered is sent."""
        self._closing = True
        if self.transport.producer is not None:
            # With a paused producer registered, Twisted would wait for it to
            # be resumed before honouring loseConnection.
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _close_with_grace(self) -> None:
        """Close, and abort if the client has not read its last lines in time."""
        self.closed_by_server = True
        self._finish()
        if self._abort_call is None:
            self._abort_call = self.clock.callLater(
                self.factory.close_grace, self.transport.abortConnection
            )

    def shutdown(self) -> None:
        """The server is stopping: close after the replies already due."""
        if self._closing and self._abort_call is not None:
            return
        self._closing = True
        self._backlog = []
        if self._waiting:
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


class ChatFactory(Factory):
    """Shared state of all connections: observer, clock, ids, limits, counters."""

    protocol = ChatProtocol
    noisy = False  # chatlog's own log says when it starts and stops

    def __init__(
        self,
        observer: Observer,
        clock: IReactorTime,
        max_line: int = 65536,
        idle_timeout: float = 300.0,
        line_timeout: float = 30.0,
        max_connections: int = 10000,
        max_per_ip: int = 1000,
        close_grace: float = 2.0,
        first_conn: int = 1,
        conn_step: int = 1,
    ) -> None:
        """
        ``first_conn`` and ``conn_step`` number the connections; worker ``i``
        of ``N`` uses ``i+1, i+1+N, ...`` so ids are unique across workers.
        """
        self.observer = observer
        self.clock = clock
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.close_grace = close_grace
        self.live: dict[int, ChatProtocol] = {}
        self.per_ip: dict[str, int] = {}
        self.next_conn = first_conn
        self.conn_step = conn_step
        # Counters read by metrics and the Server Stopped record.
        self.connections_total = 0
        self.messages_total = 0
        self.limits_total: dict[str, int] = {}
        self._sweeper: LoopingCall | None = None
        self._drained: list[Deferred[None]] = []

    def buildProtocol(self, addr: object) -> ChatProtocol:
        return self.protocol(self)

    def track(self, proto: ChatProtocol) -> None:
        """Give ``proto`` its connection id and watch it for timeouts."""
        proto.conn = self.next_conn
        self.next_conn += self.conn_step
        self.live[proto.conn] = proto

    def admit(self, proto: ChatProtocol) -> tuple[str, int, bytes] | None:
        """Count ``proto`` in; refuse it (reason, limit, notice) over a limit."""
        if not proto.conn:
            self.track(proto)
        del self.live[proto.conn]  # not counted against the limit it is checked for
        if self.max_connections and len(self.live) >= self.max_connections:
            self.count_limit("rejected_busy")
            return "server busy", self.max_connections, ERROR_SERVER_BUSY
        from_ip = self.per_ip.get(proto.ip, 0)
        if self.max_per_ip and from_ip >= self.max_per_ip:
            self.count_limit("rejected_per_ip")
            return (
                "too many connections from this address",
                self.max_per_ip,
                ERROR_TOO_MANY_FROM_ADDRESS,
            )
        self.live[proto.conn] = proto
        self.per_ip[proto.ip] = from_ip + 1
        proto.admitted = True
        self.connections_total += 1
        return None

    def forget(self, proto: ChatProtocol) -> None:
        if self.live.pop(proto.conn, None) is None:
            return
        if proto.admitted:
            left = self.per_ip[proto.ip] - 1
            if left:
                self.per_ip[proto.ip] = left
            else:
                del self.per_ip[proto.ip]
        if not self.live:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def count_limit(self, reason: str) -> None:
        self.limits_total[reason] = self.limits_total.get(reason, 0) + 1

    # -- timeouts: one sweep for all connections, not a timer each -----------

    def startFactory(self) -> None:
        timeouts = [t for t in (self.idle_timeout, self.line_timeout) if t]
        if timeouts and self._sweeper is None:
            # A timer per connection would be reset on every read; one sweep
            # a second (finer for short timeouts) costs nothing per message.
            interval = min(1.0, max(0.01, min(timeouts) / 10))
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(interval, now=False)

    def stopFactory(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    def sweep(self) -> None:
        now = self.clock.seconds()
        for proto in list(self.live.values()):
            proto.checkDeadlines(now)

    def closeAll(self) -> Deferred[None]:
        """Close every connection (after its due replies); fire when all are gone."""
        if not self.live:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for proto in list(self.live.values()):
            proto.shutdown()
        return d
