"""The event format both ways, and its cache of peer labels."""

from __future__ import annotations

from typing import Any

from chatlog.log import RecordParser, make_formatter
from chatlog.log.event_format import EventFormatter, PeerLabels
from chatlog.log.timestamps import Timestamps
from tests.unit.log_samples import WHEN, T, message


def connection_event(kind: str, conn: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "time": WHEN,
        "ip": "10.0.0.1",
        "port": 1000 + conn,
        "conn": conn,
        **extra,
    }


def test_event_format_message() -> None:
    """The default format is the seed's ``Event_Type: Timestamp - Message``."""
    record = make_formatter("event", utc=True)(message(b"Hello, Server!"))
    assert record == (
        b"Message Received: 2026-11-22 07:35:45.123456 - 127.0.0.1:53122 #17 - Hello, Server!\n"
    )


def test_ipv6_peer_is_bracketed() -> None:
    """An IPv6 address is bracketed so the port after it stays unambiguous."""
    record = make_formatter("event", utc=True)(message(b"hi", ip="::1"))
    assert b" - [::1]:53122 #17 - hi\n" in record


def test_event_format_ipv6_peer() -> None:
    """An IPv6 peer is bracketed in the event format and read back without brackets."""
    event = {"event": "message", "time": T, "ip": "::1", "port": 5, "conn": 1, "msg": b"x"}
    line = make_formatter("event")(event)
    assert b"[::1]:5" in line
    assert RecordParser("event").parse(line[:-1])["ip"] == "::1"


def test_label_is_dropped_with_the_disconnect() -> None:
    """A connection's label lives from its first record to its disconnect."""
    formatter = EventFormatter(Timestamps(utc=True))
    formatter(connection_event("connect", 1))
    formatter.messages({**connection_event("message", 1), "seq": 1}, [b"a", b"b"])
    assert len(formatter.labels) == 1
    formatter(connection_event("disconnect", 1, how="clean", messages=2, seconds=1.0))
    assert len(formatter.labels) == 0


def test_rejected_connections_leave_no_label() -> None:
    """A refused connection's only record is ``rejected``: its label goes with it."""
    formatter = EventFormatter(Timestamps(utc=True))
    for conn in range(1000):
        record = formatter(connection_event("rejected", conn, reason="server busy", limit=10))
        assert b" - 10.0.0.1:%d #%d - server busy" % (1000 + conn, conn) in record
    assert len(formatter.labels) == 0


def test_peer_labels_are_bounded() -> None:
    """Connections whose end is never logged (a client's own log) cannot grow the cache forever."""
    labels = PeerLabels()
    labels.limit = 8
    for conn in range(100):
        assert labels(connection_event("sent", conn)) == b"10.0.0.1:%d #%d - " % (1000 + conn, conn)
        assert len(labels) <= 8
    # What is still cached is still right, and what was dropped is made again.
    assert labels(connection_event("sent", 99)) == b"10.0.0.1:1099 #99 - "
    assert labels(connection_event("sent", 0)) == b"10.0.0.1:1000 #0 - "


def test_label_follows_a_new_peer_on_the_same_id() -> None:
    """Ids of separate workers' logs may repeat: a label is used only for its own address."""
    labels = PeerLabels()
    assert labels(connection_event("connect", 1)) == b"10.0.0.1:1001 #1 - "
    assert labels({**connection_event("connect", 1), "ip": "::1"}) == b"[::1]:1001 #1 - "
