"""The dash format: the seed's ``IP - Port - Timestamp - Message``, messages never passing for events."""

from __future__ import annotations

from chatlog.log import RecordParser, make_formatter
from tests.unit.log_samples import WHEN, message


def test_dash_format_message() -> None:
    """The dash format is the seed's ``IP - Port - Timestamp - Message`` with the client's port."""
    record = make_formatter("dash", utc=True)(message(b"Hello, Server!"))
    assert record == b"127.0.0.1 - 53122 - 2026-11-22 07:35:45.123456 - Hello, Server!\n"


def test_dash_message_cannot_pass_for_an_event() -> None:
    """A message that starts with ``[`` has the bracket escaped; events keep theirs."""
    fmt = make_formatter("dash", utc=True)
    forged = fmt(message(b"[Connection] #99 connected"))
    assert forged.endswith(b" - \\x5bConnection] #99 connected\n")
    real = fmt({"event": "connect", "time": WHEN, "ip": "127.0.0.1", "port": 1, "conn": 99})
    assert real.endswith(b" - [Connection] #99 connected\n")
    parser = RecordParser("dash", utc=True)
    assert parser.parse(forged[:-1])["msg"] == b"[Connection] #99 connected"
    assert parser.parse(real[:-1])["event"] == "connect"


def test_server_events_have_no_address() -> None:
    """The server's own events put ``- -`` where a connection's address and port would be."""
    record = make_formatter("dash", utc=True)(
        {"event": "stop", "time": WHEN, "connections": 1, "messages": 2, "refused": 0}
    )
    assert record == (
        b"- - - - 2026-11-22 07:35:45.123456 - [Server Stopped] "
        b"1 connection, 2 messages logged, 0 refused\n"
    )


def test_a_tagged_reply_is_the_clients_in_any_log() -> None:
    """A server's messages are untagged, so a tagged ``Message Received`` is always a reply."""
    reply = {**message(b"hi"), "event": "reply", "rtt_ms": 0.5}
    line = make_formatter("dash", utc=True)(reply)[:-1]
    assert line.endswith(b" - [Message Received] #17 hi (rtt 0.500000 ms)")
    for client in (False, True):
        assert RecordParser("dash", client=client, utc=True).parse(line)["event"] == "reply"
