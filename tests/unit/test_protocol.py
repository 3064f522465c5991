"""The protocol on StringTransport and task.Clock: replies, events, limits, flow control."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chatlog.log import LogWriter, make_formatter, unescape_text
from chatlog.server.factory import ChatFactory
from chatlog.server.protocol import ChatProtocol


class FakeLog:
    """Stands in for the LogWriter: keeps events, and acks when the test says so.

    The protocol stages messages through ``stageMessages``, as it does with
    the real writer; this one keeps each line as the event it describes.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.waiters: list[ChatProtocol] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(dict(event))

    def stageMessages(self, fields: dict[str, Any], lines: list[bytes]) -> None:
        for seq, line in enumerate(lines, fields["seq"]):
            self.events.append({**fields, "seq": seq, "msg": line})

    def ackAfterWrite(self, waiter: ChatProtocol) -> None:
        self.waiters.append(waiter)

    def flush(self, ok: bool = True) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.logWritten(ok)

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def messages(self) -> list[bytes]:
        return [e["msg"] for e in self.events if e["event"] == "message"]


def connect(factory: ChatFactory, peer: Any = None) -> tuple[ChatProtocol, StringTransport]:
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 53122))
    proto.makeConnection(transport)
    return proto, transport


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
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


@settings(max_examples=200)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=400), max_size=8))
def test_any_bytes_any_chunking(stream: bytes, cuts: list[int]) -> None:
    """Any bytes: one message per complete line (up to the limit), replies match them."""
    log = FakeLog()
    factory = ChatFactory(log, Clock(), max_line=100)
    proto, transport = connect(factory)
    points = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    for start, end in pairwise(points):
        proto.dataReceived(stream[start:end])
        log.flush()
    lines = stream.split(b"\n")[:-1]
    expected = []
    for line in lines:
        if len(line) > 100:
            break
        expected.append(line[:-1] if line.endswith(b"\r") else line)
    assert log.messages()[: len(expected)] == expected
    if len(log.messages()) == len(expected):
        replies = b"".join(b"Server received: " + m + b"\n" for m in expected)
        assert transport.value().startswith(replies)


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


def test_line_at_the_limit_is_accepted(factory: ChatFactory, log: FakeLog) -> None:
    """A line of exactly max-line bytes is a message."""
    proto, transport = connect(factory)
    proto.dataReceived(b"C" * 100 + b"\n")
    log.flush()
    assert log.messages() == [b"C" * 100]


def test_idle_timeout(factory: ChatFactory, log: FakeLog, clock: Clock) -> None:
    """Silence for idle-timeout seconds closes the connection with an event."""
    factory.startFactory()
    proto, transport = connect(factory)
    clock.advance(59)
    proto.dataReceived(b"still here\n")
    log.flush()
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(2)
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
        clock.advance(1)
    assert not transport.disconnecting
    proto.dataReceived(b"x")
    clock.advance(1.5)
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
    factory: ChatFactory, log: FakeLog
) -> None:
    """Lines held back for fairness are still logged if the client vanishes."""
    proto, _ = connect(factory)
    proto.dataReceived(b"x\n" * (ChatProtocol.LINES_PER_TURN + 5))
    proto.connectionLost(Failure(ConnectionLost()))
    assert len(log.messages()) == ChatProtocol.LINES_PER_TURN + 5


def test_flood_is_handled_in_slices(factory: ChatFactory, log: FakeLog) -> None:
    """A read of many lines is handled LINES_PER_TURN at a time, reading paused meanwhile."""
    per_turn = ChatProtocol.LINES_PER_TURN
    proto, transport = connect(factory)
    proto.dataReceived(b"y\n" * (2 * per_turn + 10))
    assert len(log.messages()) == per_turn
    assert transport.producerState == "paused"
    log.flush()
    assert len(log.messages()) == 2 * per_turn
    log.flush()
    assert len(log.messages()) == 2 * per_turn + 10
    assert transport.producerState == "producing"
    log.flush()
    assert transport.value() == b"Server received: y\n" * (2 * per_turn + 10)


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


def proxy_wrapped(factory: ChatFactory) -> Any:
    """``factory`` wrapped as an ``haproxy:`` endpoint wraps it (through public API only)."""
    from twisted.internet.defer import succeed
    from twisted.protocols.haproxy import proxyEndpoint

    class Recording:
        def listen(self, wrapped: Any) -> Any:
            self.factory = wrapped
            return succeed(None)

    inner = Recording()
    proxyEndpoint(inner).listen(factory)  # type: ignore[arg-type]
    return inner.factory


def test_proxy_protocol_logs_the_real_client(log: FakeLog, clock: Clock) -> None:
    """Behind HAProxy (PROXY v1 header) the log shows the client, not the balancer."""
    factory = ChatFactory(log, clock, max_line=100, peer_from_proxy_header=True)
    wrapping = proxy_wrapped(factory)
    proto = wrapping.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 40000))
    proto.makeConnection(transport)
    assert log.events == []
    proto.dataReceived(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 5000\r\nhello\n")
    log.flush()
    assert [(e["event"], e["ip"], e["port"]) for e in log.events] == [
        ("connect", "203.0.113.7", 56324),
        ("message", "203.0.113.7", 56324),
    ]
    assert transport.value() == b"Server received: hello\n"
    assert factory.per_ip == {"203.0.113.7": 1}


RECORD = re.compile(
    rb"(Connection|Message Received|Line Too Long): "
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - 127\.0\.0\.1:53122 #1 - (.*)"
)


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=600),
    st.lists(st.integers(min_value=1, max_value=600), max_size=10),
    st.sampled_from(["event", "dash", "json"]),
)
def test_real_log_any_bytes_any_chunking(
    tmp_path_factory: pytest.TempPathFactory, stream: bytes, cuts: list[int], fmt: str
) -> None:
    """Through the real writer: one record per line, no control bytes, exact messages back."""
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
    writer.close()
    data = path.read_bytes()
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", data)
    records = data.split(b"\n")
    assert records.pop() == b""
    received = transport.value().count(b"\n")
    is_message = {
        "event": lambda r: r.startswith(b"Message Received: "),
        "dash": lambda r: re.match(rb"127\.0\.0\.1 - 53122 - [\d:. -]{26} - (?!\[)", r),
        "json": lambda r: b'"event": "message"' in r,
    }[fmt]
    messages = [r for r in records if is_message(r)]
    assert len(messages) == proto.messages == received
    if fmt == "event":
        texts = []
        for record in records:
            match = RECORD.fullmatch(record)
            assert match, record
            if match.group(1) == b"Message Received":
                texts.append(unescape_text(match.group(2).decode()))
        assert texts == [
            e[:-1] if e.endswith(b"\r") else e for e in stream.split(b"\n")[: len(texts)]
        ]
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
