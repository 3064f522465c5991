"""The PROXY header of an haproxy: port: the strict parser, and the protocol behind it."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chatlog.server.factory import ChatFactory
from chatlog.server.protocol import ChatProtocol
from chatlog.server.proxy import V2_SIGNATURE, BadHeader, Header, HeaderReader, parse_header
from tests.unit.test_protocol import FakeLog, ReactorClock, run_for

BALANCER = IPv4Address("TCP", "10.0.0.9", 40000)


def v2(command: int, family: int, addresses: bytes, version: int = 2) -> bytes:
    """A version 2 header: signature, version and ``command``, ``family``, the address block."""
    head = struct.pack("!BBH", version << 4 | command, family, len(addresses))
    return V2_SIGNATURE + head + addresses


def v2_tcp4(source: str, port: int, extra: bytes = b"") -> bytes:
    addresses = (
        socket.inet_aton(source) + socket.inet_aton("10.0.0.1") + struct.pack("!HH", port, 5000)
    )
    return v2(1, 0x11, addresses + extra)


# -- the parser ------------------------------------------------------------------------

VALID = [
    (b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 5000\r\n", ("203.0.113.7", 56324)),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", ("0.0.0.0", 0)),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 4000 5000\r\n", ("2001:db8::7", 4000)),
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", ("::ffff:192.0.2.1", 1)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n", None),  # 107 bytes: the longest allowed
    (v2_tcp4("198.51.100.2", 8080), ("198.51.100.2", 8080)),
    (v2_tcp4("198.51.100.2", 8080, extra=b"\x03\x00\x04abcd"), ("198.51.100.2", 8080)),  # a TLV
    (
        v2(
            1,
            0x21,
            socket.inet_pton(socket.AF_INET6, "2001:db8::1") + bytes(16) + b"\x00\x50\x00\x51",
        ),
        ("2001:db8::1", 80),
    ),
    (v2(0, 0x00, b""), None),  # LOCAL: a health check
    (v2(0, 0x11, bytes(12)), None),  # LOCAL with addresses: skipped
    (v2(1, 0x00, b""), None),  # UNSPEC
    (v2(1, 0x31, bytes(216)), None),  # UNIX stream: not an address to log
    (v2(1, 0x12, bytes(12)), None),  # UDP over IPv4: likewise
]


@pytest.mark.parametrize(("header", "source"), VALID)
def test_valid_headers(header: bytes, source: tuple[str, int] | None) -> None:
    """A valid header gives the client's canonical address (or None: the peer's) and its length."""
    assert parse_header(header + b"hello\n") == Header(source, len(header))


@pytest.mark.parametrize(("header", "_"), VALID)
def test_every_prefix_of_a_valid_header_waits(header: bytes, _: object) -> None:
    """However the header is cut into reads, the parser waits for the rest, then takes it whole."""
    reader = HeaderReader()
    for byte in header[:-1]:
        assert reader.feed(bytes([byte])) is None
    assert reader.feed(header[-1:] + b"after") == (parse_header(header), b"after")


REFUSED = {
    b"PROXY TCP4 1.2.3.4\nForged\tline 127.0.0.1 5555 80\r\n": "line break",
    b"PROXY TCP4 1.2.3.4\x1b[31m 127.0.0.1 5555 80\r\n": "source address",
    b"PROXY TCP4 1.2.3.4\r5 127.0.0.1 5555 80\r\n": "line break",
    "PROXY TCP6 ::1\u2028 ::1 5555 80\r\n".encode(): "source address",
    "PROXY TCP4 \u202e1.2.3.4 127.0.0.1 5555 80\r\n".encode(): "source address",
    b"PROXY TCP4 \xff\xfe.1.2.3 127.0.0.1 5555 80\r\n": "source address",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 -1 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 99999999999999999999 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 65536 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 abc 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 080 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 1_000 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 +80 80\r\n": "source port",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 80 x\r\n": "destination port",
    b"PROXY TCP4 1.2.3.4 localhost 80 80\r\n": "destination address",
    b"PROXY TCP4 01.2.3.4 127.0.0.1 80 80\r\n": "source address",
    b"PROXY TCP4 ::1 127.0.0.1 80 80\r\n": "source address",
    b"PROXY TCP6 1.2.3.4 ::1 80 80\r\n": "source address",
    b"PROXY TCP6 fe80::1%eth0 ::1 80 80\r\n": "source address",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 80 80 \r\n": "six fields",
    b"PROXY TCP4  1.2.3.4 127.0.0.1 80 80\r\n": "six fields",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 80\r\n": "six fields",
    b"PROXY UDP4 1.2.3.4 127.0.0.1 80 80\r\n": "protocol family",
    b"PROXY tcp4 1.2.3.4 127.0.0.1 80 80\r\n": "protocol family",
    b"PROXY\r\n": "not a PROXY header",
    b"PROXY \r\n": "protocol family",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 80 80\n": "line break",
    b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n": "107 bytes",
    b"hello\n": "not a PROXY header",
    b"GET / HTTP/1.1\r\n": "not a PROXY header",
    b"proxy TCP4 1.2.3.4 127.0.0.1 80 80\r\n": "not a PROXY header",
    b"\r\n\r\nhello": "not a PROXY header",
    V2_SIGNATURE[:11] + b"X" + bytes(8): "not a PROXY header",
    v2(1, 0x11, bytes(12), version=1): "version",
    v2(1, 0x11, bytes(12), version=3): "version",
    v2(2, 0x11, bytes(12)): "command",
    v2(1, 0x41, bytes(12)): "family",
    v2(1, 0x13, bytes(12)): "family",
    v2(1, 0x11, bytes(11)): "shorter",
    v2(1, 0x21, bytes(35)): "shorter",
    v2(1, 0x31, bytes(215)): "shorter",
}


@pytest.mark.parametrize(("header", "why"), REFUSED.items())
def test_invalid_headers_are_refused_with_a_fixed_reason(header: bytes, why: str) -> None:
    """A header not exactly as the specification says is refused, saying why in fixed words."""
    with pytest.raises(BadHeader) as refused:
        parse_header(header + b"hello\n")
    assert why in refused.value.reason
    assert refused.value.reason.isascii() and refused.value.reason.isprintable()


def test_a_line_without_an_end_is_refused_at_107_bytes() -> None:
    """No CRLF within the first 107 bytes refuses the header without waiting for more."""
    assert parse_header(b"PROXY UNKNOWN " + b"f" * 91) is None  # 105 bytes: may still end
    with pytest.raises(BadHeader):
        parse_header(b"PROXY UNKNOWN " + b"f" * 93)  # 107 bytes


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=120), st.binary(max_size=40).map(lambda b: b"PROXY " + b)))
def test_any_bytes_give_a_valid_header_none_or_a_refusal(data: bytes) -> None:
    """Whatever arrives, the parser waits, refuses, or names a valid address and port."""
    try:
        header = parse_header(data)
    except BadHeader as refused:
        assert refused.reason.isascii() and refused.reason.isprintable()
        return
    if header is None:
        return
    assert 0 < header.length <= len(data)
    if header.source is not None:
        ip, port = header.source
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        assert socket.inet_ntop(family, socket.inet_pton(family, ip)) == ip
        assert 0 <= port <= 65535
    assert parse_header(data + b"more") == header  # what follows does not change it


# -- the protocol behind an haproxy: port ------------------------------------------------


def balanced(log: FakeLog, clock: ReactorClock, **limits: int) -> ChatFactory:
    return ChatFactory(
        log,
        clock,
        max_line=100,
        idle_timeout=60,
        line_timeout=5,
        peer_from_proxy_header=True,
        **limits,
    )


def connect_via_balancer(factory: ChatFactory) -> tuple[ChatProtocol, StringTransport]:
    proto = factory.buildProtocol(BALANCER)
    transport = StringTransport(peerAddress=BALANCER)
    proto.makeConnection(transport)
    return proto, transport


@pytest.fixture
def clock() -> ReactorClock:
    clock = ReactorClock()
    clock.advance(1795332945.0)
    return clock


def test_the_log_shows_the_client_the_header_names(clock: ReactorClock) -> None:
    """Behind HAProxy, connect and messages carry the header's client, and limits count it."""
    log = FakeLog()
    factory = balanced(log, clock)
    proto, transport = connect_via_balancer(factory)
    assert log.events == []
    proto.dataReceived(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 5000\r\nhello\n")
    log.flush()
    assert [(e["event"], e["ip"], e["port"]) for e in log.events] == [
        ("connect", "203.0.113.7", 56324),
        ("message", "203.0.113.7", 56324),
    ]
    assert transport.value() == b"Server received: hello\n"
    assert factory.per_ip == {"203.0.113.7": 1}


def test_a_header_cut_into_single_bytes(clock: ReactorClock) -> None:
    """A header that arrives a byte at a time, then the client's line, is the same as one read."""
    log = FakeLog()
    proto, transport = connect_via_balancer(balanced(log, clock))
    for byte in v2_tcp4("198.51.100.2", 8080) + b"hi\n":
        proto.dataReceived(bytes([byte]))
    log.flush()
    assert [(e["event"], e["ip"], e["port"]) for e in log.events] == [
        ("connect", "198.51.100.2", 8080),
        ("message", "198.51.100.2", 8080),
    ]
    assert transport.value() == b"Server received: hi\n"


@pytest.mark.parametrize(
    "header", [b"PROXY UNKNOWN\r\n", v2(0, 0x00, b"")], ids=["UNKNOWN", "LOCAL"]
)
def test_unknown_and_local_use_the_connections_own_address(
    clock: ReactorClock, header: bytes
) -> None:
    """``PROXY UNKNOWN`` and v2 LOCAL (health checks) are served, logged with the real peer."""
    log = FakeLog()
    proto, transport = connect_via_balancer(balanced(log, clock))
    proto.dataReceived(header + b"ping\n")
    log.flush()
    assert [(e["event"], e["ip"], e["port"]) for e in log.events] == [
        ("connect", "10.0.0.9", 40000),
        ("message", "10.0.0.9", 40000),
    ]
    assert transport.value() == b"Server received: ping\n"


@pytest.mark.parametrize("header", list(REFUSED)[:12], ids=range(12))
def test_a_bad_header_is_one_record_with_the_real_peer(clock: ReactorClock, header: bytes) -> None:
    """A refused header: one Bad Header event naming the balancer, no reply, a close."""
    log = FakeLog()
    factory = balanced(log, clock)
    proto, transport = connect_via_balancer(factory)
    proto.dataReceived(header + b"Message Received: forged\n")
    proto.dataReceived(b"more\n")
    log.flush()
    assert [(e["event"], e["ip"], e["port"]) for e in log.events] == [
        ("bad_header", "10.0.0.9", 40000)
    ]
    assert transport.value() == b"" and transport.disconnecting
    proto.connectionLost(Failure(ConnectionDone()))
    log.flush()
    assert len(log.events) == 1  # no Disconnection for a client never admitted
    assert factory.live == factory.unadmitted == {} and factory.limits_total == {"bad_header": 1}


@pytest.mark.parametrize(
    ("sent", "wait"), [(b"", 60), (b"PROXY TCP4 1.2.", 5)], ids=["nothing", "half a header"]
)
def test_no_header_in_time_is_refused_with_the_real_peer(
    clock: ReactorClock, sent: bytes, wait: float
) -> None:
    """No header within the idle timeout (half of one: the line timeout): Bad Header, closed."""
    log = FakeLog()
    factory = balanced(log, clock)
    factory.startFactory()
    proto, transport = connect_via_balancer(factory)
    if sent:
        proto.dataReceived(sent)
    run_for(clock, wait - 0.5)
    assert not transport.disconnecting
    run_for(clock, 1)
    log.flush()
    assert [(e["event"], e["ip"], e["port"], e["reason"]) for e in log.events] == [
        ("bad_header", "10.0.0.9", 40000, f"no complete PROXY header within {wait:g} s")
    ]
    assert transport.value() == b"" and transport.disconnecting
    factory.stopFactory()


def test_the_per_address_limit_counts_the_headers_client(clock: ReactorClock) -> None:
    """--max-per-ip counts the clients the headers name, not the balancer."""
    log = FakeLog()
    factory = balanced(log, clock, max_per_ip=1)
    first, _ = connect_via_balancer(factory)
    first.dataReceived(b"PROXY TCP4 203.0.113.7 10.0.0.1 1 5000\r\n")
    other, other_transport = connect_via_balancer(factory)
    other.dataReceived(b"PROXY TCP4 203.0.113.8 10.0.0.1 2 5000\r\n")
    again, again_transport = connect_via_balancer(factory)
    again.dataReceived(b"PROXY TCP4 203.0.113.7 10.0.0.1 3 5000\r\n")
    log.flush()
    assert other_transport.value() == b"" and not other_transport.disconnecting
    assert again_transport.value() == b"ERROR too many connections from your address\n"
    assert [(e["event"], e["ip"]) for e in log.events] == [
        ("connect", "203.0.113.7"),
        ("connect", "203.0.113.8"),
        ("rejected", "203.0.113.7"),
    ]
