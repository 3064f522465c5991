"""The protocol on StringTransport and task.Clock: replies, events, limits, flow control.

What the server must make of a stream of bytes is derived here from the
wire protocol alone (:func:`expected_outcome`), never from the code's own
counters, and limits stated in README.rst (250 lines per turn) are written
as numbers, so raising one in the code turns a test red.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from chatlog.log import LogWriter, RecordParser, make_formatter, unescape_text
from chatlog.server.closing import can_half_close
from chatlog.server.factory import ChatFactory
from chatlog.server.protocol import ChatProtocol

REPLY = b"Server received: "
#: README.rst: "one that floods tiny lines is served at most 250 lines per turn".
LINES_PER_TURN = 250


def expected_outcome(stream: bytes, max_line: int, eof: bool = False) -> tuple[list[bytes], bool]:
    """The messages the wire protocol makes of ``stream``, and whether a line was too long.

    Lines end with ``\\n``, a trailing ``\\r`` is dropped, and a line longer
    than ``max_line`` bytes (without its ending) ends the connection: nothing
    from it on is a message.  At a clean end of stream (``eof``) the
    unfinished last line is a line too; without it, it is only refused when
    it is already too long.
    """
    *lines, unfinished = stream.split(b"\n")
    messages = []
    for line in lines:
        line = line[:-1] if line.endswith(b"\r") else line
        if len(line) > max_line:
            return messages, True
        messages.append(line)
    last = unfinished[:-1] if unfinished.endswith(b"\r") else unfinished
    if len(last) > max_line:
        return messages, True
    if eof and unfinished:
        messages.append(last)
    return messages, False


def replies_to(messages: list[bytes], too_long: bool, max_line: int) -> bytes:
    """Every reply the client must get, in order."""
    replies = b"".join(REPLY + m + b"\n" for m in messages)
    return replies + (b"ERROR line too long (max %d bytes)\n" % max_line if too_long else b"")


class FakeLog:
    """Stands in for the LogWriter: keeps events, and acks when the test says so.

    The protocol stages messages through ``stageMessages`` and
    ``stagePlainLines``, as it does with the real writer; this one keeps each
    line as the event it describes.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.waiters: list[ChatProtocol] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(dict(event))

    def stageMessages(self, fields: dict[str, Any], lines: list[bytes]) -> None:
        for seq, line in enumerate(lines, fields["seq"]):
            self.events.append({**fields, "seq": seq, "msg": line})

    def stagePlainLines(self, fields: dict[str, Any], body: bytes, count: int) -> None:
        lines = body.split(b"\n")
        assert len(lines) == count
        self.stageMessages(fields, lines)

    def ackAfterWrite(self, waiter: ChatProtocol) -> None:
        self.waiters.append(waiter)

    def flush(self, ok: bool = True) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.logWritten(ok)

    def settle(self, clock: Clock | None = None) -> None:
        """Run turns until no connection waits for a write (held-back lines are handled)."""
        for _ in range(10_000):
            if clock is not None:
                clock.advance(0)  # lines of lost connections: a slice a turn
            if not self.waiters and (clock is None or not clock.getDelayedCalls()):
                return
            self.flush()
        raise AssertionError("the connection never stopped asking for writes")

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def messages(self) -> list[bytes]:
        return [e["msg"] for e in self.events if e["event"] == "message"]


def connect(factory: ChatFactory, peer: Any = None) -> tuple[ChatProtocol, StringTransport]:
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 53122))
    proto.makeConnection(transport)
    return proto, transport


def run_for(clock: Clock, seconds: float, step: float = 0.25) -> None:
    """Let ``seconds`` pass in small steps, as in a running reactor whose sweeps come on time."""
    clock.pump([step] * round(seconds / step))


class ReactorClock(Clock):
    """A Clock that runs, like the reactor, only the calls due when a turn begins.

    A call made during a turn (``callLater(0)``) runs in the next one, after
    that turn's reads: Twisted's ``runUntilCurrent`` works this way, and the
    deadline sweep relies on it.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = sorted(
            (c for c in self.calls if c.getTime() <= self.rightNow), key=ReactorClock.calls_key
        )
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)

    @staticmethod
    def calls_key(call: Any) -> float:
        return float(call.getTime())


class SlowReaderTransport(StringTransport):
    """A StringTransport with Twisted's flow control: a client that reads only when told.

    Past ``bufferSize`` queued bytes it pauses its producer; :meth:`drain`
    is the client reading everything, after which the producer is resumed.
    """

    bufferSize = 65536  # Twisted's FileDescriptor default

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > self.bufferSize:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        read = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return read


@pytest.fixture
def clock() -> Clock:
    clock = ReactorClock()
    clock.advance(1795332945.0)
    return clock


@pytest.fixture
def log() -> FakeLog:
    return FakeLog()


@pytest.fixture
def factory(log: FakeLog, clock: Clock) -> ChatFactory:
    return ChatFactory(log, clock, max_line=100, idle_timeout=60, line_timeout=5)


def test_connection_event_has_peer_and_id(factory: ChatFactory, log: FakeLog) -> None:
    """A connection is logged with the client's address, port and a new id."""
    connect(factory)
    connect(factory, IPv6Address("TCP", "::1", 4000))
    assert [(e["event"], e["ip"], e["port"], e["conn"]) for e in log.events] == [
        ("connect", "127.0.0.1", 53122, 1),
        ("connect", "::1", 4000, 2),
    ]


def test_no_reply_before_the_log_write(factory: ChatFactory, log: FakeLog) -> None:
    """Replies wait for the records' write; then all go out in order, in one write."""
    proto, transport = connect(factory)
    proto.dataReceived(b"Hello, Server!\nsecond\r\nthi")
    assert transport.value() == b""
    assert log.messages() == [b"Hello, Server!", b"second"]
    log.flush()
    assert transport.value() == b"Server received: Hello, Server!\nServer received: second\n"
    proto.dataReceived(b"rd\n")
    log.flush()
    assert transport.value().endswith(b"Server received: third\n")
    assert [e["seq"] for e in log.events if e["event"] == "message"] == [1, 2, 3]


def test_failed_log_write_answers_error(factory: ChatFactory, log: FakeLog) -> None:
    """No ack without a record: a refused batch gets ``ERROR log unavailable`` per line."""
    proto, transport = connect(factory)
    proto.dataReceived(b"one\ntwo\n")
    log.flush(ok=False)
    assert transport.value() == b"ERROR log unavailable\n" * 2
    proto.dataReceived(b"three\n")
    log.flush(ok=True)
    assert transport.value().endswith(b"Server received: three\n")
    assert not transport.disconnecting


STREAM = b"alpha\nbeta\r\n\r\n\n{x} %s \\ \x00\x1b\xff\xfe\r\x85 tail\nlast\n"


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_records(cuts: list[int]) -> None:
    """However the stream is cut into reads, the records and replies are the same."""
    log = FakeLog()
    factory = ChatFactory(log, Clock(), max_line=100)
    proto, transport = connect(factory)
    points = [0, *sorted(set(cuts)), len(STREAM)]
    for start, end in pairwise(points):
        proto.dataReceived(STREAM[start:end])
        log.flush()
    expected = [b"alpha", b"beta", b"", b"", b"{x} %s \\ \x00\x1b\xff\xfe\r\x85 tail", b"last"]
    assert log.messages() == expected
    assert transport.value() == b"".join(b"Server received: " + m + b"\n" for m in expected)


#: Streams of lines near and over a 100-byte limit, with every kind of ending, or any bytes.
STREAMS = st.one_of(
    st.lists(
        st.tuples(
            st.one_of(
                st.binary(max_size=8),
                st.binary(min_size=98, max_size=102),
                st.binary(min_size=103, max_size=300),
            ),
            st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b"\r", b""]),
        ),
        max_size=12,
    ).map(lambda parts: b"".join(line + end for line, end in parts)),
    st.binary(max_size=600),
)


@settings(max_examples=300)
@given(
    STREAMS,
    st.lists(st.integers(min_value=1, max_value=1200), max_size=8),
    st.sampled_from([b"", b"\n", b"\r\n", b"\n" * 300]),
)
def test_any_bytes_any_chunking(stream: bytes, cuts: list[int], tail: bytes) -> None:
    """Any bytes, cut anywhere: exactly the messages and replies the wire protocol says.

    Both sequences are compared whole, against what the stream itself
    implies, then once more after a clean end of stream.
    """
    stream += tail
    log = FakeLog()
    clock = Clock()
    factory = ChatFactory(log, clock, max_line=100)
    proto, transport = connect(factory)
    points = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    for start, end in pairwise(points):
        proto.dataReceived(stream[start:end])
        log.flush()
    log.settle()
    messages, too_long = expected_outcome(stream, 100)
    assert log.messages() == messages
    assert transport.value() == replies_to(messages, too_long, 100)
    assert [e["seq"] for e in log.events if e["event"] == "message"] == list(
        range(1, len(messages) + 1)
    )
    assert log.kinds().count("line_too_long") == too_long
    proto.connectionLost(Failure(ConnectionDone()))
    log.settle(clock)
    messages, too_long = expected_outcome(stream, 100, eof=True)
    assert log.messages() == messages
    assert log.kinds()[-1] == "disconnect"
    assert log.events[-1]["messages"] == len(messages)


def test_line_too_long_logs_answers_and_closes(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """An over-long line: earlier lines answered, then an error, an event, a close."""
    proto, transport = connect(factory)
    proto.dataReceived(b"ok\n" + b"A" * 150 + b"\nMessage Received: forged\n")
    proto.dataReceived(b"more\n")
    log.flush()
    assert log.kinds() == ["connect", "message", "line_too_long"]
    assert log.events[-1]["limit"] == 100
    assert transport.value() == (b"Server received: ok\nERROR line too long (max 100 bytes)\n")
    assert transport.disconnecting
    clock.advance(factory.close_grace)
    assert transport.disconnected  # aborted: the client did not go away by itself


def test_line_too_long_without_newline(factory: ChatFactory, log: FakeLog) -> None:
    """An unfinished line over the limit is refused at once, not buffered forever."""
    proto, transport = connect(factory)
    proto.dataReceived(b"B" * 60)
    proto.dataReceived(b"B" * 60)
    proto.dataReceived(b"\nforged\n")
    log.flush()
    assert log.kinds() == ["connect", "line_too_long"]
    assert transport.value() == b"ERROR line too long (max 100 bytes)\n"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("split", [False, True], ids=["one read", "ending apart"])
def test_line_at_the_limit_is_accepted(
    factory: ChatFactory, log: FakeLog, ending: bytes, split: bool
) -> None:
    """A line of exactly max-line bytes is a message, however it ends and is cut."""
    proto, transport = connect(factory)
    line = b"C" * 100 + ending
    if split:
        proto.dataReceived(line[:-1])  # with CRLF, the read ends with the CR
        proto.dataReceived(line[-1:])
    else:
        proto.dataReceived(line)
    log.flush()
    assert log.messages() == [b"C" * 100]
    assert transport.value() == REPLY + b"C" * 100 + b"\n"
    assert not transport.disconnecting


@pytest.mark.parametrize("data", [b"D" * 101 + b"\r\n", b"D" * 100 + b"\r\r\n", b"D" * 101 + b"\r"])
def test_line_one_over_the_limit_is_refused(
    factory: ChatFactory, log: FakeLog, data: bytes
) -> None:
    """One byte over max-line (not counting the line ending) is refused, finished or not."""
    proto, transport = connect(factory)
    proto.dataReceived(data)
    proto.dataReceived(b"x")  # a CR not followed by LF does not end the line
    log.flush()
    assert log.kinds() == ["connect", "line_too_long"]
    assert transport.value() == b"ERROR line too long (max 100 bytes)\n"


def test_idle_timeout(factory: ChatFactory, log: FakeLog, clock: Clock) -> None:
    """Silence for idle-timeout seconds closes the connection with an event."""
    factory.startFactory()
    proto, transport = connect(factory)
    run_for(clock, 59)
    proto.dataReceived(b"still here\n")
    log.flush()
    run_for(clock, 59)
    assert "timeout" not in log.kinds()
    run_for(clock, 1.5)
    log.flush()
    assert log.events[-1]["event"] == "timeout" and log.events[-1]["kind"] == "idle"
    assert transport.value().endswith(b"ERROR timeout\n")
    assert transport.disconnecting
    factory.stopFactory()


def test_trickling_cannot_reset_the_line_deadline(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """A line trickled one byte a second is cut at line-timeout, however active it looks."""
    factory.startFactory()
    proto, transport = connect(factory)
    for _ in range(4):
        proto.dataReceived(b"x")
        run_for(clock, 1)
    assert not transport.disconnecting
    proto.dataReceived(b"x")
    run_for(clock, 1.5)
    log.flush()
    assert log.events[-1]["event"] == "timeout" and log.events[-1]["kind"] == "line"
    assert transport.disconnecting
    factory.stopFactory()


def test_finished_lines_restart_the_line_deadline(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """A client that finishes its lines is never cut by the line deadline."""
    factory.startFactory()
    proto, transport = connect(factory)
    for _ in range(20):
        proto.dataReceived(b"x\ny")
        log.flush()
        clock.advance(1)
    assert not transport.disconnecting
    factory.stopFactory()


def test_max_connections(log: FakeLog, clock: Clock) -> None:
    """Beyond max-connections: ``ERROR server busy``, a Rejected event, a close."""
    factory = ChatFactory(log, clock, max_connections=2)
    connect(factory)
    connect(factory)
    _, transport = connect(factory)
    log.flush()
    assert transport.value() == b"ERROR server busy\n"
    assert transport.disconnecting
    assert log.events[-1]["event"] == "rejected" and log.events[-1]["reason"] == "server busy"
    assert len(factory.live) == 2


def test_max_per_ip_counts_per_address(log: FakeLog, clock: Clock) -> None:
    """The per-address limit refuses a third connection from one address only."""
    factory = ChatFactory(log, clock, max_per_ip=2)
    a = IPv4Address("TCP", "10.0.0.1", 1)
    b = IPv4Address("TCP", "10.0.0.2", 1)
    first, _ = connect(factory, a)
    connect(factory, a)
    _, third = connect(factory, a)
    _, other = connect(factory, b)
    log.flush()
    assert third.value() == b"ERROR too many connections from your address\n"
    assert other.value() == b"" and not other.disconnecting
    first.connectionLost(Failure(ConnectionDone()))
    _, again = connect(factory, a)
    log.flush()
    assert again.value() == b"" and not again.disconnecting
    assert factory.per_ip == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_rejected_connection_logs_no_connect_or_disconnect(log: FakeLog, clock: Clock) -> None:
    """A refused connection is one Rejected record, not a Connection and a Disconnection."""
    factory = ChatFactory(log, clock, max_connections=1)
    connect(factory)
    proto, _ = connect(factory)
    log.flush()
    proto.connectionLost(Failure(ConnectionDone()))
    assert log.kinds() == ["connect", "rejected"]


def test_disconnection_event(factory: ChatFactory, log: FakeLog, clock: Clock) -> None:
    """A disconnection says clean or lost, how many messages, and how long."""
    proto, _ = connect(factory)
    proto.dataReceived(b"a\nb\n")
    log.flush()
    clock.advance(2.5)
    proto.connectionLost(Failure(ConnectionDone()))
    other, _ = connect(factory)
    other.connectionLost(Failure(ConnectionLost()))
    ends = [e for e in log.events if e["event"] == "disconnect"]
    assert [(e["how"], e["messages"], e["seconds"]) for e in ends] == [
        ("clean", 2, 2.5),
        ("lost", 0, 0.0),
    ]
    assert factory.live == {}


def test_half_close_gets_every_reply(factory: ChatFactory, log: FakeLog) -> None:
    """A client that shuts its write side gets all its replies, then the close."""
    proto, transport = connect(factory)
    proto.dataReceived(b"one\ntwo\nthree-without-newline")
    proto.readConnectionLost()
    assert not transport.disconnecting
    log.flush()
    assert transport.value() == (
        b"Server received: one\nServer received: two\nServer received: three-without-newline\n"
    )
    assert transport.disconnecting


def test_lines_received_before_a_lost_connection_are_logged(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """Lines held back for fairness are still logged if the client vanishes, 250 a turn."""
    proto, _ = connect(factory)
    proto.dataReceived(b"x\n" * 1000)
    proto.connectionLost(Failure(ConnectionLost()))
    assert len(log.messages()) == 2 * 250  # the read's slice, then the loss's
    clock.advance(0)
    assert len(log.messages()) == 3 * 250
    log.settle(clock)
    assert log.messages() == [b"x"] * 1000
    assert log.kinds()[-1] == "disconnect" and log.events[-1]["messages"] == 1000
    assert factory.live == {}


def test_flood_is_handled_in_slices(factory: ChatFactory, log: FakeLog) -> None:
    """A read of many lines is handled 250 at a time (README's cap), reading paused meanwhile."""
    proto, transport = connect(factory)
    proto.dataReceived(b"y\n" * 510)
    assert len(log.messages()) == 250
    assert transport.producerState == "paused"
    log.flush()
    assert len(log.messages()) == 500
    log.flush()
    assert len(log.messages()) == 510
    assert transport.producerState == "producing"
    log.flush()
    assert transport.value() == b"Server received: y\n" * 510


def test_a_client_that_never_reads_makes_the_server_hold_little(
    factory: ChatFactory, log: FakeLog
) -> None:
    """64 KiB of empty lines from a client that reads nothing: the server holds KiB, not 1 MiB.

    Each empty line's reply is 18 times its size.  Past the factory's small
    send buffer (not Twisted's 64 KiB) the server neither handles the lines
    it holds nor reads more; as the client reads, it goes on, and every line
    is answered, in order.
    """
    proto = factory.buildProtocol(None)
    transport = SlowReaderTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 53122))
    proto.makeConnection(transport)
    limit = transport.bufferSize
    assert limit <= 16384  # also what one read may bring, in a real transport
    one_turn = 250 * len(REPLY + b"\n")
    proto.dataReceived(b"\n" * 65536)
    for _ in range(20):
        log.flush()
        assert len(transport.value()) <= limit + one_turn
    staged = len(log.messages())
    assert staged < 65536 and transport.producerState == "paused"
    for _ in range(20):
        log.flush()
    assert len(log.messages()) == staged  # nothing handled while nothing is read
    received = b""
    for _ in range(10_000):
        received += transport.drain()
        log.flush()
        assert len(transport.value()) <= limit + one_turn
        if len(received) + len(transport.value()) == 65536 * len(REPLY + b"\n"):
            break
    received += transport.drain()
    assert received == (REPLY + b"\n") * 65536
    assert log.messages() == [b""] * 65536
    assert transport.producerState == "producing"


def test_backpressure_pauses_reading(factory: ChatFactory, log: FakeLog) -> None:
    """The protocol is the transport's producer: a full send buffer pauses reading."""
    proto, transport = connect(factory)
    assert transport.producer is proto and transport.streaming
    proto.pauseProducing()
    assert transport.producerState == "paused"
    proto.resumeProducing()
    assert transport.producerState == "producing"


def test_shutdown_sends_due_replies_then_closes(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """On server stop, replies already due still go out before the close."""
    proto, transport = connect(factory)
    idle, idle_transport = connect(factory)
    proto.dataReceived(b"last words\n")
    closed = factory.closeAll()
    assert idle_transport.disconnecting
    assert not transport.disconnecting
    log.flush()
    assert transport.value() == b"Server received: last words\n"
    assert transport.disconnecting
    fired: list[object] = []
    closed.addCallback(fired.append)
    proto.connectionLost(Failure(ConnectionDone()))
    idle.connectionLost(Failure(ConnectionDone()))
    assert fired == [None]
    assert [e["how"] for e in log.events if e["event"] == "disconnect"] == ["closed", "closed"]


def test_counters(factory: ChatFactory, log: FakeLog) -> None:
    """The factory counts connections and messages, as metrics and Server Stopped need."""
    a, _ = connect(factory)
    b, _ = connect(factory)
    a.dataReceived(b"1\n2\n")
    b.dataReceived(b"3\n")
    assert (factory.connections_total, factory.messages_total) == (2, 3)


RECORD = re.compile(
    rb"(Connection|Message Received|Line Too Long|Disconnection): "
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - 127\.0\.0\.1:53122 #1 - (.*)"
)


@settings(max_examples=150, deadline=None)
@given(
    STREAMS,
    st.lists(st.integers(min_value=1, max_value=1200), max_size=10),
    st.sampled_from(["event", "dash", "json"]),
)
def test_real_log_any_bytes_any_chunking(
    tmp_path_factory: pytest.TempPathFactory, stream: bytes, cuts: list[int], fmt: str
) -> None:
    """Through the real writer: one record per line, no control bytes, exactly the messages sent.

    The messages read back from the file, and the replies, are compared
    whole with what the stream implies (:func:`expected_outcome`).
    """
    path = tmp_path_factory.mktemp("log") / "chat.log"
    clock = Clock()
    clock.advance(1795332945.0)
    writer = LogWriter(str(path), make_formatter(fmt, utc=True), clock)
    writer.open()
    factory = ChatFactory(writer, clock, max_line=100)
    proto, transport = connect(factory)
    points = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    for start, end in pairwise(points):
        proto.dataReceived(stream[start:end])
        clock.advance(0)
    for _ in range(10):  # held-back lines: a slice a turn
        clock.advance(0)
    writer.close()
    messages, too_long = expected_outcome(stream, 100)
    assert transport.value() == replies_to(messages, too_long, 100)
    data = path.read_bytes()
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", data)
    records = data.split(b"\n")
    assert records.pop() == b""
    parser = RecordParser(fmt, utc=True)
    events = [parser.parse(record) for record in records]
    assert [e["msg"] for e in events if e["event"] == "message"] == messages
    assert [e["event"] for e in events] == ["connect"] + ["message"] * len(messages) + [
        "line_too_long"
    ] * too_long
    if fmt == "event":  # and independently of the parser, for one format
        texts = []
        for record in records:
            match = RECORD.fullmatch(record)
            assert match, record
            if match.group(1) == b"Message Received":
                texts.append(unescape_text(match.group(2).decode()))
        assert texts == messages
    if fmt == "json":
        for record in records:
            assert record.isascii()
            json.loads(record)


def test_shutdown_keeps_a_pending_error_notice(factory: ChatFactory, log: FakeLog) -> None:
    """A server stop while a policy close awaits the log write still sends its ERROR line."""
    proto, transport = connect(factory)
    proto.dataReceived(b"ok\n" + b"A" * 150 + b"\n")
    factory.closeAll()
    log.flush()
    assert transport.value() == b"Server received: ok\nERROR line too long (max 100 bytes)\n"
    assert transport.disconnecting


# -- deadlines: judged after the reads already waiting; the server's own time is no one's idleness


def test_deadlines_are_judged_after_the_reads_already_waiting(log: FakeLog) -> None:
    """A client found silent by the sweep whose line is already waiting is not cut.

    The sweep is a timed call, and timed calls run before a turn's reads:
    its verdict waits one turn, for the reads that were there all along.
    """
    clock = ReactorClock()
    factory = ChatFactory(log, clock, idle_timeout=60, line_timeout=5)
    factory.startFactory()
    waiting, waiting_transport = connect(factory)
    silent, silent_transport = connect(factory)
    run_for(clock, 60)  # the sweep at 60 s finds both silent for 60 s
    waiting.dataReceived(b"sent at 59.9 s, read in the sweep's turn\n")
    clock.advance(0)  # the next turn: the verdict
    log.flush()
    assert silent_transport.disconnecting
    assert not waiting_transport.disconnecting
    assert waiting_transport.value() == REPLY + b"sent at 59.9 s, read in the sweep's turn\n"
    factory.stopFactory()


def test_a_stall_of_the_server_is_no_clients_idleness(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """The server stopped for 70 s (SIGSTOP): no one is cut for it; true silence still is."""
    factory.startFactory()
    busy, busy_transport = connect(factory)
    silent, silent_transport = connect(factory)
    run_for(clock, 50)
    busy.dataReceived(b"just before the stall\n")
    log.flush()
    clock.advance(70)  # one late sweep, 69.5 s after the one before
    clock.advance(0)
    assert "timeout" not in log.kinds()
    run_for(clock, 10.5)  # the silent one: 50 s before the stall and 10.5 s after
    log.flush()
    assert silent_transport.disconnecting
    assert not busy_transport.disconnecting
    assert [e["conn"] for e in log.events if e["event"] == "timeout"] == [silent.conn]
    factory.stopFactory()


def test_lines_held_back_are_no_idleness(factory: ChatFactory, log: FakeLog, clock: Clock) -> None:
    """While the server works through a client's lines (not reading it), the client is not idle."""
    factory.startFactory()
    proto, transport = connect(factory)
    proto.dataReceived(b"z\n" * 1000)
    for _ in range(3):  # a server so busy that each slice of 250 takes 25 s
        run_for(clock, 25)
        assert "timeout" not in log.kinds()
        log.flush()
    log.flush()
    assert transport.value() == (REPLY + b"z\n") * 1000
    run_for(clock, 59.5)  # idle from when its last line was handled, at 75 s
    assert "timeout" not in log.kinds()
    run_for(clock, 1)
    log.flush()
    assert transport.disconnecting and log.events[-1]["kind"] == "idle"
    factory.stopFactory()


def test_a_slow_reader_is_not_idle(factory: ChatFactory, log: FakeLog, clock: Clock) -> None:
    """Replies piling up are not the client's idleness while it reads them, slowly."""
    factory.startFactory()
    proto, transport = connect(factory)
    proto.dataReceived(b"a\n")
    log.flush()
    run_for(clock, 1)
    proto.pauseProducing()  # the transport: its send buffer is full
    run_for(clock, 50)
    proto.resumeProducing()  # the client read it all
    run_for(clock, 59)
    assert "timeout" not in log.kinds()
    run_for(clock, 1.5)
    log.flush()
    assert transport.disconnecting and log.events[-1]["kind"] == "idle"
    factory.stopFactory()


def test_a_client_that_reads_nothing_is_idle_from_when_its_replies_filled_up(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """A client that reads none of its replies is idle from when they filled the buffer."""
    factory.startFactory()
    proto, transport = connect(factory)
    proto.dataReceived(b"a\n")
    log.flush()
    run_for(clock, 30)
    proto.pauseProducing()
    run_for(clock, 59.5)
    assert "timeout" not in log.kinds()
    run_for(clock, 1)
    log.flush()
    assert transport.disconnecting and log.events[-1]["kind"] == "idle"
    factory.stopFactory()


# -- closes the server decides: the write side shut after the replies, input drained, no reset


class HalfClosingTransport(SlowReaderTransport):
    """A slow reader's transport that, like Twisted's TCP one, can shut its write side alone.

    ``write_shut`` says ``loseWriteConnection`` was called; once the client
    has read everything (:meth:`drain`), the protocol hears that its write
    side is shut, as Twisted tells it after sending the last queued byte.
    """

    write_shut = False

    def loseWriteConnection(self) -> None:
        self.write_shut = True

    def write(self, data: bytes) -> None:
        assert not self.write_shut, f"{data!r} written after the write side was shut"
        super().write(data)

    def drain(self) -> bytes:
        read = super().drain()
        if self.write_shut:
            self.protocol.writeConnectionLost()
        return read


def connect_half_closing(factory: ChatFactory) -> tuple[ChatProtocol, HalfClosingTransport]:
    proto = factory.buildProtocol(None)
    transport = HalfClosingTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 53122))
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def test_a_stop_shuts_the_write_side_and_reads_on_to_the_clients_end(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """A stop half-closes after the due replies, even while reading was paused; nothing read after it counts."""
    proto, transport = connect_half_closing(factory)
    transport.bufferSize = 64
    proto.dataReceived(b"".join(b"due %d\n" % i for i in range(10)))
    log.flush()
    assert transport.producerState == "paused"  # replies backed up: the client is not read
    factory.closeAll()
    # Closing the socket now, with the client's input unread, would reset it.
    assert not transport.disconnecting and transport.write_shut
    assert transport.producer is None and transport.producerState == "producing"
    proto.dataReceived(b"after the stop\n")
    proto.readConnectionLost()  # the client's end of stream: nothing is left to read
    log.flush()
    assert transport.drain() == b"".join(REPLY + b"due %d\n" % i for i in range(10))
    assert transport.disconnecting
    assert log.messages() == [b"due %d" % i for i in range(10)]
    proto.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []  # the grace's abort is cancelled
    assert [e["how"] for e in log.events if e["event"] == "disconnect"] == ["closed"]


@pytest.mark.parametrize("reads", [False, True], ids=["reads nothing", "reads, never closes"])
def test_a_policy_close_half_closes_and_aborts_after_the_grace(
    factory: ChatFactory, log: FakeLog, clock: Clock, reads: bool
) -> None:
    """A line too long: replies and ERROR, then only the write side shut; a client that stays is aborted."""
    proto, transport = connect_half_closing(factory)
    proto.dataReceived(b"ok\n" + b"A" * 150 + b"\nforged\n")
    log.flush()
    assert transport.write_shut and not transport.disconnecting
    proto.dataReceived(b"more forged\n")
    log.flush()
    if reads:
        assert transport.drain() == REPLY + b"ok\nERROR line too long (max 100 bytes)\n"
    assert not transport.disconnecting
    clock.advance(factory.close_grace)
    assert transport.disconnected  # aborted
    assert log.messages() == [b"ok"]


def test_a_stop_after_the_clients_end_closes_at_once(factory: ChatFactory, log: FakeLog) -> None:
    """A client that shut its write side has nothing left unread: a stop closes, no half-close."""
    proto, transport = connect_half_closing(factory)
    proto.dataReceived(b"bye\n")
    proto.readConnectionLost()
    factory.closeAll()
    log.flush()
    assert transport.value() == REPLY + b"bye\n"
    assert transport.disconnecting and not transport.write_shut


def test_a_close_due_after_the_connection_is_lost_does_nothing(
    factory: ChatFactory, log: FakeLog, clock: Clock
) -> None:
    """A policy close whose log write comes back after the connection was lost closes nothing."""
    proto, transport = connect_half_closing(factory)
    proto.dataReceived(b"B" * 150)
    proto.connectionLost(Failure(ConnectionLost()))
    log.settle(clock)
    assert not transport.write_shut and not transport.disconnecting
    assert clock.getDelayedCalls() == []


def test_only_a_transport_that_can_itself_half_close_is_half_closed() -> None:
    """TCP and UNIX transports shut one side; TLS, which forwards unknown names to TCP, must not."""
    assert can_half_close(object.__new__(tcp.Server))
    assert can_half_close(object.__new__(unix.Server))
    tls = object.__new__(TLSMemoryBIOProtocol)
    tls.transport = object.__new__(tcp.Server)
    assert hasattr(tls, "loseWriteConnection")  # TLS's __getattr__ finds TCP's
    assert not can_half_close(tls)
    assert not can_half_close(StringTransport())
