"""What all connections of one server share: the log, the clock, ids, limits, counters.

:class:`ChatFactory` builds a :class:`~chatlog.server.protocol.ChatProtocol`
per connection and owns everything that is not one connection's business:

- connection ids (unique across ``--workers``: worker ``i`` of ``N`` numbers
  its connections ``i+1, i+1+N, ...``);
- admission: ``--max-connections`` and ``--max-per-ip``, counted here
  because Twisted's ``LimitConnectionsByPeer`` raises on every connection,
  and the bound on the replies an admitted connection may have queued;
- timeouts: one sweep a second over every connection, rather than a timer
  per connection that every read would have to reset.  Timeouts measure the
  client's silence, not the server's: a connection found past its deadline
  is judged again one reactor turn later, after the reads already waiting in
  the kernel; a sweep that comes late (the process was stopped, starved or
  blocked) moves every running deadline on by the time lost; and time the
  server spent not reading a client is not counted (:meth:`ChatFactory.overdue`);
- the open sockets, for :class:`~chatlog.server.listening.AcceptGuard`, which
  keeps the port from accepting while no file descriptor is free, and to
  hand memory back to the system when most of them have gone;
- the counters that metrics and the ``Server Stopped`` record read;
- per-client quotas (:mod:`chatlog.server.quota`): each admitted connection
  joins its address's buckets, unless the address is exempt;
- closing every connection when the server stops.

Nothing here knows about twistd, options or files.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall

from chatlog.log import Event
from chatlog.server.protocol import ChatProtocol
from chatlog.server.quota import Quotas
from chatlog.wire import ERROR_SERVER_BUSY, ERROR_TOO_MANY_FROM_ADDRESS

if TYPE_CHECKING:
    from collections.abc import Iterator


class LogSink(Protocol):
    """What the protocol needs of the log: :class:`chatlog.log.LogWriter` is one."""

    def __call__(self, event: Event) -> None:
        """Stage one event's record."""

    def stageMessages(self, fields: Event, lines: list[bytes]) -> None:
        """Stage the message records of lines read together (``fields`` is the first's)."""

    def stagePlainLines(self, fields: Event, body: bytes, count: int) -> None:
        """Stage the records of ``count`` lines joined by ``\\n`` in ``body``, none to escape."""

    def ackAfterWrite(self, waiter: ChatProtocol) -> None:
        """Call ``waiter.logWritten(ok)`` once everything staged so far is written."""


def _buffers_of(transport: object) -> Any:
    """What sets ``transport``'s buffer size: the TCP transport (under TLS, the one it wraps).

    ``bufferSize`` is the public attribute of Twisted's ``FileDescriptor``
    that sets both the most it reads at once and how many bytes of queued
    writes make it pause its producer (64 KiB by default).  None for a
    transport without one (a test's ``StringTransport``).
    """
    for _ in range(3):
        if isinstance(getattr(transport, "bufferSize", None), int):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def _free_memory_releaser() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, which returns free heap pages to the system; None elsewhere.

    Freed memory stays in the C heap, fragmented by what outlives it: after
    a thousand clients that flooded and left, RSS kept ~40 MiB that this
    call gives back in a few milliseconds (measured: 2 MiB kept).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_release_free_memory = _free_memory_releaser()

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -4


def keep_big_buffers_in_the_heap() -> bool:
    """Let glibc serve buffers up to 4 MiB from the heap and keep 64 MiB free at its top.

    A turn's batch of records at 16 KiB lines is megabytes: above glibc's
    mmap threshold each such buffer is a fresh mapping, faulted in page by
    page and unmapped when freed, every turn.  From the heap it reuses
    memory already faulted in.  ``malloc_trim`` (above) still gives free
    pages back when connections go.  False where there is no glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, 4 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 64 << 20))


#: Memory is given back when the sockets fall to a quarter of a peak of at least this many.
RELEASE_AFTER = 100


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
        buffer_sizes: tuple[int, int] = (4096, 16384),
        quotas: Quotas | None = None,
    ) -> None:
        """
        :param log: where events go (the :class:`chatlog.log.LogWriter`).
        :param close_grace: seconds a client whose connection the server
            closes gets to read its last lines and close its side before the
            connection is aborted (:mod:`chatlog.server.closing`).
        :param first_conn: the first connection id; ``conn_step`` the step.
        :param peer_from_proxy_header: connections come from a balancer
            that first sends a PROXY header naming the client (an
            ``haproxy:`` port): the protocol admits the client once it has
            read a valid one.
        :param buffer_sizes: the most a connection reads at once, which is
            also how many bytes of replies it may have queued before it is
            not read until they drain: the small size at first and for a
            client whose reads hold more lines than one turn handles (a
            turn's worth is all it can use), the large one for a client
            whose reads come full of few, long lines.  Twisted's 64 KiB let
            1,000 clients that never read hold 64 MiB; 4 KiB reads cost 35%
            more CPU per message than 16 KiB for 1,000-byte lines.
        :param quotas: ``--rate-limit`` and ``--byte-limit`` per client
            address (None: no quota).
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
        self.small_buffer, self.large_buffer = buffer_sizes
        self.quotas = quotas
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
        #: Sockets of connections built and not yet lost, admitted or not.
        self.sockets = 0
        self._sockets_peak = 0
        self._release_call: IDelayedCall | None = None
        #: Called when one of them is closed (the accept guard listens).
        self.on_socket_closed: Callable[[], object] | None = None
        self._sweeper: LoopingCall | None = None
        self._interval = 1.0  # seconds between sweeps
        self._swept_at = 0.0  # when the last one ran
        self._drained: list[Deferred[None]] = []

    # Factory is generic from Twisted 26.4 on and not before: no one annotation
    # satisfies both, hence the ignore that may be unused.
    def buildProtocol(self, addr: object) -> ChatProtocol:  # type: ignore[override, unused-ignore]
        self.sockets += 1
        self._sockets_peak = max(self._sockets_peak, self.sockets)
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
        self.size_buffers(proto, self.small_buffer)
        if self.quotas is not None:
            self.quotas.join(proto)
        return None

    def size_buffers(self, proto: ChatProtocol, size: int) -> None:
        """``proto`` reads at most ``size`` bytes at once and pauses past ``size`` queued."""
        proto.read_size = size
        buffers = _buffers_of(proto.transport)
        if buffers is not None:
            buffers.bufferSize = size

    def socket_closed(self) -> None:
        """A connection's socket is closed (its last records may still be on their way)."""
        self.sockets -= 1
        if self.on_socket_closed is not None:
            self.on_socket_closed()

    def _release_memory(self) -> None:
        self._release_call = None
        if _release_free_memory is not None:
            _release_free_memory()

    def forget(self, proto: ChatProtocol) -> bool:
        """``proto``'s connection is over: stop counting it.  Returns whether it was admitted."""
        if self._sockets_peak >= RELEASE_AFTER and self.sockets * 4 <= self._sockets_peak:
            self._sockets_peak = self.sockets
            if _release_free_memory is not None and self._release_call is None:
                # A second on, when what the gone connections held is freed.
                self._release_call = self.clock.callLater(1.0, self._release_memory)
        admitted = self.live.pop(proto.conn, None) is not None
        if admitted:
            if proto.quota is not None and self.quotas is not None:
                self.quotas.leave(proto, proto.quota)
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
        keep_big_buffers_in_the_heap()  # process-wide: so at start, not at import
        timeouts = [t for t in (self.idle_timeout, self.line_timeout) if t]
        if timeouts and self._sweeper is None:
            # A sweep a second (finer for short timeouts) costs nothing per message.
            self._interval = min(1.0, max(0.01, min(timeouts) / 10))
            self._swept_at = self.clock.seconds()
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(self._interval, now=False)

    def stopFactory(self) -> None:
        if self.quotas is not None:
            self.quotas.stop()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        self._release_call = None

    def sweep(self) -> None:
        """Find the connections past a deadline; judge them next turn, after pending reads."""
        now = self.clock.seconds()
        late = now - self._swept_at - self._interval
        self._swept_at = now
        if late > self._interval:
            self._discount_stall(now - late, late)
        due = [proto for proto in self._open_connections() if self.overdue(proto, now)]
        if due:
            self.clock.callLater(0, self._expire, due)

    def _discount_stall(self, start: float, length: float) -> None:
        """The server did not run from ``start`` for ``length`` s: no client is idle for it.

        A sweep more than an interval late means the process was stopped
        (SIGSTOP, a debugger), starved of CPU, or blocked (a hung log write):
        its clients could neither be read nor answered meanwhile, so every
        deadline that was running moves on by the stall.
        """
        for proto in self._open_connections():
            if proto.last_activity < start:
                proto.last_activity += length
            if proto.line_started is not None and proto.line_started < start:
                proto.line_started += length
            if proto.send_full_at < start:
                proto.send_full_at += length

    def _expire(self, due: list[ChatProtocol]) -> None:
        now = self.clock.seconds()
        for proto in due:
            overdue = self.overdue(proto, now)
            if overdue is not None:
                proto.time_out(*overdue)

    def overdue(self, proto: ChatProtocol, now: float) -> tuple[str, float] | None:
        """The deadline ``proto`` has passed at ``now``: ``("idle" or "line", seconds)``, if any.

        Time the server spent not reading a client (a backlog of its lines,
        or replies it does not read) is not the client's idleness, unless
        the client reads none of its replies: then it is idle from when they
        filled up.
        """
        if not proto.reading:
            return None
        idle, line = self.idle_timeout, self.line_timeout
        if proto.reading_paused:
            since = max(proto.last_activity, proto.send_full_at)
            if proto.send_buffer_full and idle and now - since >= idle:
                return "idle", idle
            return None
        if line and proto.line_started is not None and now - proto.line_started >= line:
            return "line", line
        if idle and now - proto.last_activity >= idle:
            return "idle", idle
        return None

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
