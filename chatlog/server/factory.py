"""What all connections of one server share: the log, the clock, ids, limits, counters.

:class:`ChatFactory` builds a :class:`~chatlog.server.protocol.ChatProtocol`
per connection and owns everything that is not one connection's business:

- connection ids (unique across ``--workers``: worker ``i`` of ``N`` numbers
  its connections ``i+1, i+1+N, ...``);
- admission: ``--max-connections`` and ``--max-per-ip``, counted here
  because Twisted's ``LimitConnectionsByPeer`` raises on every connection;
- timeouts: one sweep a second over every connection, rather than a timer
  per connection that every read would have to reset;
- the counters that metrics and the ``Server Stopped`` record read;
- closing every connection when the server stops.

Nothing here knows about twistd, options or files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall

from chatlog.server.protocol import ChatProtocol, LogSink
from chatlog.wire import ERROR_SERVER_BUSY, ERROR_TOO_MANY_FROM_ADDRESS

if TYPE_CHECKING:
    from collections.abc import Iterator


class Refusal(NamedTuple):
    """Why a connection was refused: logged as the ``rejected`` event, sent as ``notice``."""

    reason: str
    limit: int
    notice: bytes


class ChatFactory(Factory):
    """Shared state of all connections: log, clock, ids, limits, counters."""

    noisy = False  # chatlog's own log says when it starts and stops

    def __init__(
        self,
        log: LogSink,
        clock: IReactorTime,
        max_line: int = 65536,
        idle_timeout: float = 300.0,
        line_timeout: float = 30.0,
        max_connections: int = 10000,
        max_per_ip: int = 1000,
        close_grace: float = 2.0,
        first_conn: int = 1,
        conn_step: int = 1,
        peer_from_proxy_header: bool = False,
    ) -> None:
        """
        :param log: where events go (the :class:`chatlog.log.LogWriter`).
        :param close_grace: seconds a closing client gets to read its last
            lines before the connection is aborted.
        :param first_conn: the first connection id; ``conn_step`` the step.
        :param peer_from_proxy_header: connections arrive through a
            PROXY-protocol wrapper (an ``haproxy:`` port), so the client's
            address is known only once the header was read.
        """
        self.log = log
        self.clock = clock
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.close_grace = close_grace
        self.peer_from_proxy_header = peer_from_proxy_header
        #: Admitted connections by id: what --max-connections counts.
        self.live: dict[int, ChatProtocol] = {}
        #: Connections whose PROXY header has not arrived yet (not admitted yet).
        self.unadmitted: dict[int, ChatProtocol] = {}
        #: Admitted connections per client address: what --max-per-ip counts.
        self.per_ip: dict[str, int] = {}
        self.next_conn = first_conn
        self.conn_step = conn_step
        # Counters read by metrics and the Server Stopped record.
        self.connections_total = 0
        self.messages_total = 0
        self.limits_total: dict[str, int] = {}
        self._sweeper: LoopingCall | None = None
        self._drained: list[Deferred[None]] = []

    # Factory is generic from Twisted 26.4 on and not before: no one annotation
    # satisfies both, hence the ignore that may be unused.
    def buildProtocol(self, addr: object) -> ChatProtocol:  # type: ignore[override, unused-ignore]
        return ChatProtocol(self)

    def _open_connections(self) -> Iterator[ChatProtocol]:
        yield from list(self.unadmitted.values())
        yield from list(self.live.values())

    # -- admission ------------------------------------------------------------

    def number(self, proto: ChatProtocol) -> None:
        """Give ``proto`` its connection id; it is watched for timeouts until admitted."""
        proto.conn = self.next_conn
        self.next_conn += self.conn_step
        self.unadmitted[proto.conn] = proto

    def admit(self, proto: ChatProtocol) -> Refusal | None:
        """Count ``proto`` in, or say why it is refused (over a connection limit)."""
        if not proto.conn:
            self.number(proto)
        del self.unadmitted[proto.conn]
        if self.max_connections and len(self.live) >= self.max_connections:
            self.count_limit("rejected_busy")
            return Refusal("server busy", self.max_connections, ERROR_SERVER_BUSY)
        from_ip = self.per_ip.get(proto.ip, 0)
        if self.max_per_ip and from_ip >= self.max_per_ip:
            self.count_limit("rejected_per_ip")
            return Refusal(
                "too many connections from this address",
                self.max_per_ip,
                ERROR_TOO_MANY_FROM_ADDRESS,
            )
        self.live[proto.conn] = proto
        self.per_ip[proto.ip] = from_ip + 1
        self.connections_total += 1
        return None

    def forget(self, proto: ChatProtocol) -> bool:
        """``proto``'s connection is gone: stop counting it.  Returns whether it was admitted."""
        admitted = self.live.pop(proto.conn, None) is not None
        if admitted:
            left = self.per_ip[proto.ip] - 1
            if left:
                self.per_ip[proto.ip] = left
            else:
                del self.per_ip[proto.ip]
        else:
            self.unadmitted.pop(proto.conn, None)
        if not self.live and not self.unadmitted:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)
        return admitted

    def count_limit(self, reason: str) -> None:
        self.limits_total[reason] = self.limits_total.get(reason, 0) + 1

    # -- timeouts: one sweep for all connections, not a timer each -----------

    def startFactory(self) -> None:
        timeouts = [t for t in (self.idle_timeout, self.line_timeout) if t]
        if timeouts and self._sweeper is None:
            # A sweep a second (finer for short timeouts) costs nothing per message.
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
        for proto in self._open_connections():
            proto.checkDeadlines(now)

    # -- stopping -------------------------------------------------------------

    def closeAll(self) -> Deferred[None]:
        """Close every connection (after its due replies); fire when all are gone."""
        if not self.live and not self.unadmitted:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for proto in self._open_connections():
            proto.shutdown()
        return d
