"""Per-client quotas on StringTransport and task.Clock: the buckets' arithmetic, pause and resume.

The rates a client must get are derived here from the token bucket's
definition (``burst + rate * t``), never from the code's own counters, and
every message sent is checked to be logged and answered: a quota slows a
client, it never drops a line.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatlog.server.factory import ChatFactory
from chatlog.server.protocol import ChatProtocol
from chatlog.server.quota import Limit, Quotas, parse_limit, parse_network
from tests.unit.test_protocol import FakeLog

START = 1795332945.0


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


def make_factory(
    log: FakeLog,
    clock: Clock,
    rate: str = "0",
    byte_rate: str = "0",
    exempt: tuple[str, ...] = (),
) -> ChatFactory:
    quotas = Quotas(
        log, clock, parse_limit(rate), parse_limit(byte_rate), [parse_network(n) for n in exempt]
    )
    return ChatFactory(log, clock, idle_timeout=0, line_timeout=0, quotas=quotas)


def connect(factory: ChatFactory, ip: str = "127.0.0.2") -> tuple[ChatProtocol, StringTransport]:
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000 + factory.next_conn))
    proto.makeConnection(transport)
    return proto, transport


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(b"m%d\n" % i for i in range(start, start + n))


def replies(transport: StringTransport) -> int:
    return transport.value().count(b"Server received: ")


def take(quota: Any, data: bytes) -> None:
    """``data`` read now from ``quota``'s address, counted as the protocol counts it."""
    quota.take(len(data), data.count(b"\n"), quota.quotas.clock.seconds())


def throttled(log: FakeLog) -> list[dict[str, Any]]:
    return [e for e in log.events if e["event"] == "throttled"]


# -- options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [("1000", Limit(1000, 1000)), ("1000/50", Limit(1000, 50)), ("0", None), ("0/5", None)],
)
def test_limits_parse(text: str, limit: Limit | None) -> None:
    """``N[/BURST]``: the burst defaults to N; 0 means no limit."""
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["x", "-1", "10/0", "1.5", "10/", "/5"])
def test_bad_limits_are_refused(text: str) -> None:
    """Anything but whole numbers, N >= 0 and BURST >= 1, is a usage error."""
    with pytest.raises(ValueError, match="N\\[/BURST\\]"):
        parse_limit(text)


# -- the buckets' arithmetic ------------------------------------------------------


def test_a_burst_is_free_and_one_more_pauses(clock: Clock) -> None:
    """BURST messages at once pass; the next one pauses the address for exactly 1/N s."""
    events: list[dict[str, Any]] = []
    quotas = Quotas(events.append, clock, Limit(10, 5))
    proto = _Recorder()
    quota = quotas.join(proto)  # type: ignore[arg-type]
    assert quota is not None
    take(quota, b"m\n" * 5)
    assert proto.states == []
    take(quota, b"m\n")
    assert proto.states == [True]
    clock.advance(0.1 - 1e-6)
    assert proto.states == [True]
    clock.advance(1e-6)
    assert proto.states == [True, False]


def test_a_debt_is_paid_by_a_longer_pause(clock: Clock) -> None:
    """A read of 30 messages against a bucket of 10 (10/s) pauses for the 20 over: 2 s."""
    quotas = Quotas(lambda e: None, clock, Limit(10, 10))
    proto = _Recorder()
    quota = quotas.join(proto)  # type: ignore[arg-type]
    assert quota is not None
    take(quota, b"m\n" * 30)
    clock.advance(1.999)
    assert proto.states == [True]
    clock.advance(0.001)
    assert proto.states == [True, False]


@pytest.mark.parametrize("read", [1, 7, 64, 1000])
def test_a_flooder_gets_exactly_its_rate_whatever_its_reads(clock: Clock, read: int) -> None:
    """Reading whenever allowed, in reads of any size, a flooder gets burst + rate * t, within a read."""
    quotas = Quotas(lambda e: None, clock, Limit(1000, 200))
    proto = _Recorder()
    quota = quotas.join(proto)  # type: ignore[arg-type]
    assert quota is not None
    taken = 0
    for _ in range(100_000):  # 10 s in steps of 0.1 ms
        if not proto.paused:
            take(quota, b"m\n" * read)
            taken += read
        clock.advance(0.0001)
    # The float clock's steps drift near 1.8e9 s: what passed is read off it.
    allowed = 200 + 1000 * (clock.seconds() - START)
    # Within a read, and the float rounding of 10,000 additions (<< 1 message each).
    assert allowed - read - 2 <= taken <= allowed + read + 2


def test_the_byte_limit_counts_bytes(clock: Clock) -> None:
    """--byte-limit: 1,000 bytes over a bucket of 1,000 B/s pauses for 1 s, reason bytes."""
    events: list[dict[str, Any]] = []
    quotas = Quotas(events.append, clock, Limit(1000, 1000), Limit(1000, 1000))
    proto = _Recorder()
    quota = quotas.join(proto)  # type: ignore[arg-type]
    assert quota is not None
    take(quota, b"x" * 1999 + b"\n")
    assert events[0]["reason"] == "bytes" and events[0]["limit"] == 1000
    clock.advance(0.999)
    assert proto.states == [True]
    clock.advance(0.001)
    assert proto.states == [True, False]


def test_a_read_is_counted_once_by_its_own_lines_and_bytes(clock: Clock) -> None:
    """Pieces of a line are no messages; bytes already counted in an earlier read are not again."""
    log = FakeLog()
    proto, transport = connect(make_factory(log, clock, "10"))
    proto.dataReceived(lines(10))  # the whole burst
    for _ in range(5):
        proto.dataReceived(b"part")  # no newline: no message
    assert transport.producerState == "producing"
    proto.dataReceived(b"\n")  # the 11th line
    assert transport.producerState == "paused"
    log = FakeLog()
    proto, transport = connect(make_factory(log, clock, byte_rate="100"), "127.0.0.3")
    proto.dataReceived(b"x" * 60)  # an unfinished line, held in the buffer
    proto.dataReceived(b"y" * 39 + b"\n")  # 100 bytes in all: the burst, not more
    assert transport.producerState == "producing"
    proto.dataReceived(b"z\n")
    assert transport.producerState == "paused"
    log.flush()
    assert replies(transport) == 2


class _Recorder:
    """Stands in for a connection: records throttle calls."""

    ip = "127.0.0.2"

    def __init__(self) -> None:
        self.states: list[bool] = []

    @property
    def paused(self) -> bool:
        return bool(self.states) and self.states[-1]

    def throttle(self, paused: bool) -> None:
        self.states.append(paused)


# -- the protocol: pause, resume, nothing dropped ------------------------------------


def test_over_quota_every_line_read_is_answered_and_reading_pauses(clock: Clock) -> None:
    """A read of 30 lines over a quota of 10: all 30 logged and answered, then no reading for 2 s."""
    log = FakeLog()
    factory = make_factory(log, clock, "10")
    proto, transport = connect(factory)
    proto.dataReceived(lines(30))
    log.flush()
    assert log.messages() == [b"m%d" % i for i in range(30)]
    assert replies(transport) == 30
    assert transport.producerState == "paused"
    clock.advance(1.99)
    assert transport.producerState == "paused"
    clock.advance(0.01)
    assert transport.producerState == "producing"


def test_lines_held_back_in_a_backlog_are_still_handled_while_throttled(clock: Clock) -> None:
    """A read of 1,000 lines (more than one turn's 250) over a quota: every one is answered."""
    log = FakeLog()
    factory = make_factory(log, clock, "100")
    proto, transport = connect(factory)
    proto.dataReceived(lines(1000))
    log.settle()
    assert replies(transport) == 1000
    assert len(log.messages()) == 1000
    assert transport.producerState == "paused"  # still paying: 900 over at 100/s
    clock.advance(9.0)
    assert transport.producerState == "producing"


def test_one_record_on_entry_and_one_on_release_however_many_pauses(clock: Clock) -> None:
    """A flooder paused a hundred times over 10 s: one Throttled record in, one out, with totals."""
    log = FakeLog()
    factory = make_factory(log, clock, "100")
    proto, transport = connect(factory)
    sent = 0
    pauses = 0
    first_pause = (0, 0.0)  # messages sent until the first pause, and when
    for _ in range(1000):  # 10 s in steps of 10 ms
        if transport.producerState == "producing":
            proto.dataReceived(lines(20, sent))
            sent += 20
            if transport.producerState == "paused":
                pauses += 1
                first_pause = first_pause if pauses > 1 else (sent, clock.seconds())
            log.flush()
        clock.advance(0.01)
    assert pauses >= 40
    assert [e.get("state") for e in throttled(log)] == ["paused"]
    clock.advance(0.5)  # the last pause ends
    clock.advance(1.0)  # then the quiet second
    records = throttled(log)
    assert [e["state"] for e in records] == ["paused", "released"]
    assert records[0] == {
        "event": "throttled",
        "time": first_pause[1],
        "state": "paused",
        "address": "127.0.0.2",
        "reason": "rate",
        "limit": 100,
        "burst": 100,
    }
    released = records[1]
    assert released["reason"] == "rate"
    assert released["held"] == sent - first_pause[0]  # every message read after the first pause
    assert 9.5 <= released["seconds"] <= 10.5  # the clock jumps 0.5 s at the end
    assert 0.8 * released["seconds"] <= released["paused"] <= released["seconds"]
    assert replies(transport) == sent == len(log.messages())


def test_a_read_while_paused_extends_the_pause(clock: Clock) -> None:
    """TLS may hand over bytes it had decrypted after reading paused: their debt is paid too."""
    log = FakeLog()
    factory = make_factory(log, clock, "10")
    proto, transport = connect(factory)
    proto.dataReceived(lines(20))  # 10 over: 1 s
    clock.advance(0.5)
    proto.dataReceived(lines(10, 20))  # read while paused: 1 s more
    clock.advance(0.5)
    assert transport.producerState == "paused"
    clock.advance(0.99)
    assert transport.producerState == "paused"
    clock.advance(0.01)
    assert transport.producerState == "producing"
    log.flush()
    assert replies(transport) == 30


def test_a_throttled_connection_reads_again_a_little_at_a_time(clock: Clock) -> None:
    """After a pause a read is 10 ms of the quota (here 10 lines of 16 bytes): small lumps."""
    log = FakeLog()
    factory = make_factory(log, clock, "1000")
    proto, transport = connect(factory)
    factory.size_buffers(proto, factory.large_buffer)  # a client of long lines
    line = b"x" * 15 + b"\n"
    for _ in range(11):
        proto.dataReceived(line * 100)  # at last 100 over the burst: 0.1 s
    clock.advance(0.1)
    assert transport.producerState == "producing"
    assert proto.read_size == 160
    proto.dataReceived(line * 10)  # one such read: 10 ms more
    assert transport.producerState == "paused"
    clock.advance(0.01)
    assert transport.producerState == "producing"
    assert proto.read_size == 160


def test_paced_reads_are_never_tiny_nor_over_the_small_buffer(clock: Clock) -> None:
    """At 10 lines a second a read is still 128 bytes; 1 KiB lines are read 4 KiB at a time."""
    log = FakeLog()
    slow = make_factory(log, clock, "10")
    proto, transport = connect(slow)
    proto.dataReceived(lines(20))
    clock.advance(1.0)
    assert transport.producerState == "producing"
    assert proto.read_size == 128
    fast = make_factory(log, clock, "1000")
    proto, transport = connect(fast, "127.0.0.3")
    for _ in range(11):
        proto.dataReceived((b"x" * 1023 + b"\n") * 100)
    clock.advance(0.1)
    assert transport.producerState == "producing"
    assert proto.read_size == fast.small_buffer


def test_connections_of_one_address_share_its_bucket(clock: Clock) -> None:
    """One connection's flood pauses its sibling too; another address reads on."""
    log = FakeLog()
    factory = make_factory(log, clock, "10")
    a, ta = connect(factory, "127.0.0.2")
    b, tb = connect(factory, "127.0.0.2")
    c, tc = connect(factory, "127.0.0.3")
    a.dataReceived(lines(6))
    b.dataReceived(lines(6))
    assert (ta.producerState, tb.producerState, tc.producerState) == ("paused",) * 2 + (
        "producing",
    )
    # A new connection of a paused address starts paused; its debt is the address's.
    d, td = connect(factory, "127.0.0.2")
    assert td.producerState == "paused"
    clock.advance(0.2)
    assert {ta.producerState, tb.producerState, td.producerState} == {"producing"}
    log.flush()
    assert replies(ta) == replies(tb) == 6


def test_a_debt_outlives_the_connection(clock: Clock) -> None:
    """Reconnecting does not clear a debt: the new connection waits for what the old one owed."""
    log = FakeLog()
    factory = make_factory(log, clock, "10")
    proto, transport = connect(factory)
    proto.dataReceived(lines(30))
    log.flush()
    transport.loseConnection()
    proto.connectionLost()
    clock.advance(0)
    log.flush()
    again, transport2 = connect(factory)
    assert transport2.producerState == "paused"
    clock.advance(2.0)
    assert transport2.producerState == "producing"


def test_exempt_addresses_are_never_throttled(clock: Clock) -> None:
    """--rate-exempt 10.0.0.0/8: a flood from 10.1.2.3 is read on; the same from elsewhere is not."""
    log = FakeLog()
    factory = make_factory(log, clock, "10", exempt=("10.0.0.0/8", "::1"))
    free, tf = connect(factory, "10.1.2.3")
    held, th = connect(factory, "192.0.2.1")
    free.dataReceived(lines(100))
    held.dataReceived(lines(100))
    assert (tf.producerState, th.producerState) == ("producing", "paused")
    assert free.quota is None
    assert [e["address"] for e in throttled(log)] == ["192.0.2.1"]


def test_a_throttled_client_does_not_time_out(clock: Clock) -> None:
    """Time the server spends not reading a throttled client is not the client's idleness."""
    log = FakeLog()
    quotas = Quotas(log, clock, Limit(1, 1))
    factory = ChatFactory(log, clock, idle_timeout=5, line_timeout=2, quotas=quotas)
    factory.startFactory()
    proto, transport = connect(factory)
    proto.dataReceived(lines(10) + b"unfinished")
    for _ in range(80):  # 8 s: past both deadlines, still paying 9 s of debt
        clock.advance(0.1)
        log.flush()
    assert "timeout" not in log.kinds()
    assert transport.producerState == "paused" and not transport.disconnecting
    factory.stopFactory()


def test_an_episode_running_when_the_server_stops_is_released(clock: Clock) -> None:
    """Stopping ends every episode with its release record (how long, so far) and no timer left."""
    log = FakeLog()
    factory = make_factory(log, clock, "10")
    proto, _ = connect(factory)
    proto.dataReceived(lines(30))
    clock.advance(0.5)
    factory.stopFactory()
    assert [(e["state"], e.get("seconds"), e.get("paused")) for e in throttled(log)] == [
        ("paused", None, None),
        ("released", 0.5, 0.5),
    ]
    assert clock.getDelayedCalls() == []


def test_an_idle_address_is_forgotten(clock: Clock) -> None:
    """An address gone with a full bucket is dropped: the table holds connected or owing ones."""
    log = FakeLog()
    factory = make_factory(log, clock, "10")
    proto, _ = connect(factory)
    proto.dataReceived(lines(3))
    log.flush()
    proto.connectionLost()
    clock.advance(0)
    log.flush()
    assert factory.quotas is not None
    assert "127.0.0.2" in factory.quotas.addresses  # 3 tokens short still
    clock.advance(1.0)
    connect(factory, "127.0.0.9")  # admissions prune, at most once a second
    assert set(factory.quotas.addresses) == {"127.0.0.9"}


def test_quotas_off_cost_nothing_per_connection(clock: Clock) -> None:
    """Without --rate-limit or --byte-limit no connection has a quota to consult."""
    log = FakeLog()
    factory = ChatFactory(log, clock)
    proto, _ = connect(factory)
    proto.dataReceived(b"x\n")
    assert proto.quota is None
    # Past 30 attributes CPython 3.11 gives an instance a dict of its own:
    # +1.3 KB a connection, which the 10,000-connection test counts.
    assert "quota" not in vars(proto) and len(vars(proto)) <= 30


_DICT_SIZES = """
import sys
from twisted.internet.task import Clock
from tests.unit.test_quota import ChatFactory, FakeLog, connect, lines, make_factory
clock, log = Clock(), FakeLog()
plain, _ = connect(ChatFactory(log, clock, idle_timeout=0, line_timeout=0))
proto, _ = connect(make_factory(log, clock, "10"))
for conn in (plain, proto):
    conn.dataReceived(lines(30))
log.flush()
assert proto.quota is not None and plain.quota is None
print(sys.getsizeof(vars(plain)), sys.getsizeof(vars(proto)))
"""


def test_a_connection_with_a_quota_keeps_a_shared_key_dict() -> None:
    """With quotas on, a connection's attributes still fit the key table CPython shares.

    Past it (29 attributes on 3.11) each connection gets a dict of its own:
    1,584 bytes instead of 296, and slower attribute reads in the hot path.
    In a fresh interpreter, as in a server: the table is per class and
    process, and the other tests fill it with the attributes of rare paths.
    """
    done = subprocess.run(
        [sys.executable, "-c", _DICT_SIZES], capture_output=True, text=True, check=True
    )
    plain, with_quota = map(int, done.stdout.split())
    assert plain == with_quota < 1000
