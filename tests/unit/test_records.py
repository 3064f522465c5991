"""The pure formatters: one record per line, whatever bytes a client sends."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlog.log import (
    EVENT_NAMES,
    Timestamps,
    escape_text,
    make_formatter,
    unescape_text,
)

# 2026-11-22 07:35:45.123456 UTC
WHEN = 1795332945.123456

# Every class of hostile byte the contract names, each with what it must become.
HOSTILE = {
    b"CR\rinside": rb"CR\x0dinside",
    b"LF\ninside": rb"LF\x0ainside",
    b"NUL\x00": rb"NUL\x00",
    b"ESC\x1b[31mred": rb"ESC\x1b[31mred",
    b"DEL\x7f": rb"DEL\x7f",
    "C1 \x85 next-line".encode(): rb"C1 \u0085 next-line",
    "LS \u2028 PS \u2029".encode(): rb"LS \u2028 PS \u2029",
    b"invalid \xff\xfe utf8": rb"invalid \xff\xfe utf8",
    b"truncated \xe2\x82": rb"truncated \xe2\x82",
    b"{braces} and %s %d %%": b"{braces} and %s %d %%",
    b"back\\slash \\x41": b"back\\\\slash \\\\x41",
    "caf\u00e9 \u65e5\u672c".encode(): "caf\u00e9 \u65e5\u672c".encode(),
    "bidi \u202e override".encode(): rb"bidi \u202e override",
}


def message(msg: bytes, **extra: object) -> dict[str, object]:
    return {
        "event": "message",
        "time": WHEN,
        "ip": "127.0.0.1",
        "port": 53122,
        "conn": 17,
        "seq": 4,
        "msg": msg,
        **extra,
    }


@pytest.mark.parametrize("raw, escaped", HOSTILE.items())
def test_escape_each_hostile_class(raw: bytes, escaped: bytes) -> None:
    """Each hostile byte class is escaped as the contract says and comes back exactly."""
    text, _ = escape_text(raw)
    assert text == escaped
    assert unescape_text(text.decode()) == raw


def test_clean_ascii_is_returned_as_is() -> None:
    """The fast path: printable ASCII without a backslash is not copied or changed."""
    raw = b"Hello, Server! 0123456789 ~"
    text, valid = escape_text(raw)
    assert text is raw and valid


@given(st.binary(max_size=200))
def test_escape_round_trip_and_no_control_bytes(raw: bytes) -> None:
    """Any bytes escape to printable text without control bytes, and unescape exactly."""
    text, valid = escape_text(raw)
    assert not re.search(rb"[\x00-\x1f\x7f]", text)
    decoded = text.decode("utf-8")
    assert all(ch.isprintable() for ch in decoded)
    assert unescape_text(decoded) == raw
    try:
        raw.decode("utf-8")
        assert valid
    except UnicodeDecodeError:
        assert not valid


def test_event_format_message() -> None:
    """The default format is the seed's ``Event_Type: Timestamp - Message``."""
    record = make_formatter("event", utc=True)(message(b"Hello, Server!"))
    assert record == (
        b"Message Received: 2026-11-22 07:35:45.123456 - 127.0.0.1:53122 #17 - Hello, Server!\n"
    )


def test_dash_format_message() -> None:
    """The dash format is the seed's ``IP - Port - Timestamp - Message`` with the client's port."""
    record = make_formatter("dash", utc=True)(message(b"Hello, Server!"))
    assert record == b"127.0.0.1 - 53122 - 2026-11-22 07:35:45.123456 - Hello, Server!\n"


def test_json_format_message() -> None:
    """JSON Lines with the contract's keys, in order, and no record separator."""
    record = make_formatter("json", utc=True)(message(b"Hello, Server!"))
    assert record == (
        b'{"ts": "2026-11-22T07:35:45.123456+00:00", "event": "message", "ip": "127.0.0.1", '
        b'"port": 53122, "conn": 17, "seq": 4, "msg": "Hello, Server!"}\n'
    )


def test_json_marks_invalid_utf8() -> None:
    """Invalid UTF-8 sets ``utf8: false`` and ``msg`` holds the reversible escaping."""
    record = make_formatter("json")(message(b"ok \xff \\ \n"))
    parsed = json.loads(record)
    assert parsed["utf8"] is False
    assert unescape_text(parsed["msg"]) == b"ok \xff \\ \n"


def test_json_valid_utf8_keeps_the_text() -> None:
    """Valid UTF-8, controls included, is the exact text; JSON escapes the controls."""
    raw = 'tab\there \u2028 \x85 "quoted" caf\u00e9'.encode()
    record = make_formatter("json")(message(raw))
    assert record.isascii() and record.count(b"\n") == 1
    parsed = json.loads(record)
    assert parsed["msg"].encode() == raw and "utf8" not in parsed


def test_dash_message_cannot_pass_for_an_event() -> None:
    """A message that starts with ``[`` has the bracket escaped; events keep theirs."""
    fmt = make_formatter("dash", utc=True)
    forged = fmt(message(b"[Connection] #99 connected"))
    assert forged.endswith(b" - \\x5bConnection] #99 connected\n")
    real = fmt({"event": "connect", "time": WHEN, "ip": "127.0.0.1", "port": 1, "conn": 99})
    assert real.endswith(b" - [Connection] #99 connected\n")


def test_ipv6_peer_is_bracketed() -> None:
    """An IPv6 address is bracketed so the port after it stays unambiguous."""
    record = make_formatter("event", utc=True)(message(b"hi", ip="::1"))
    assert b" - [::1]:53122 #17 - hi\n" in record


SERVER_EVENTS = [
    {
        "event": "start",
        "listen": "127.0.0.1:5000",
        "endpoint": "tcp:5000",
        "pid": 42,
        "version": "0.1.0",
    },
    {"event": "connect", "ip": "10.1.2.3", "port": 4000, "conn": 1},
    {
        "event": "disconnect",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "how": "clean",
        "messages": 3,
        "seconds": 1.5,
    },
    {"event": "line_too_long", "ip": "10.1.2.3", "port": 4000, "conn": 1, "limit": 100},
    {
        "event": "timeout",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "kind": "idle",
        "seconds": 300.0,
    },
    {
        "event": "timeout",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "kind": "line",
        "seconds": 30.0,
    },
    {
        "event": "rejected",
        "ip": "10.1.2.3",
        "port": 4000,
        "conn": 1,
        "reason": "server busy",
        "limit": 10,
    },
    {
        "event": "log_error",
        "error": "[Errno 28] No space left on device",
        "seconds": 2.5,
        "refused": 7,
        "lost": 1,
    },
    {"event": "stop", "connections": 1, "messages": 3},
]


@pytest.mark.parametrize("fmt", ["event", "dash", "json"])
@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: e["event"])
def test_every_event_is_one_line(fmt: str, event: dict[str, object]) -> None:
    """Every event type formats to exactly one ``\\n``-terminated line naming its type."""
    record = make_formatter(fmt, utc=True)({**event, "time": WHEN})
    assert record.endswith(b"\n") and record.count(b"\n") == 1
    if fmt == "json":
        assert json.loads(record)["event"] == event["event"]
    else:
        assert EVENT_NAMES[str(event["event"])].encode() in record


def test_event_texts() -> None:
    """The human texts of the event format, as README.rst shows them."""
    fmt = make_formatter("event", utc=True)
    lines = [fmt({**event, "time": WHEN}).decode() for event in SERVER_EVENTS]
    ts = "2026-11-22 07:35:45.123456"
    assert lines == [
        f"Server Started: {ts} - listening on 127.0.0.1:5000 (tcp:5000), pid 42, chatlog 0.1.0\n",
        f"Connection: {ts} - 10.1.2.3:4000 #1 - connected\n",
        f"Disconnection: {ts} - 10.1.2.3:4000 #1 - clean, 3 messages, 1.500000 s\n",
        f"Line Too Long: {ts} - 10.1.2.3:4000 #1 - line longer than 100 bytes, connection closed\n",
        f"Timeout: {ts} - 10.1.2.3:4000 #1 - idle for 300 s, connection closed\n",
        f"Timeout: {ts} - 10.1.2.3:4000 #1 - line not finished within 30 s, connection closed\n",
        f"Rejected: {ts} - 10.1.2.3:4000 #1 - server busy (limit 10), connection refused\n",
        f"Log Error: {ts} - log unavailable for 2.500000 s ([Errno 28] No space left on device): 7 messages refused, 1 other record lost\n",
        f"Server Stopped: {ts} - 1 connection, 3 messages\n",
    ]


def test_unknown_format_is_a_clear_error() -> None:
    """Asking for a format that does not exist names the ones that do."""
    with pytest.raises(ValueError, match="event, dash, json"):
        make_formatter("xml")


def test_timestamps_local_time_carries_the_offset() -> None:
    """Local ISO timestamps carry the machine's UTC offset; UTC ones carry +00:00."""
    offset = time.localtime(WHEN).tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    assert Timestamps().iso(WHEN).endswith(f".123456{sign}{hours:02d}:{minutes:02d}".encode())
    assert Timestamps(utc=True).iso(WHEN) == b"2026-11-22T07:35:45.123456+00:00"


def test_timestamps_cache_follows_the_second() -> None:
    """The per-second prefix cache never serves a stale second."""
    stamps = Timestamps(utc=True)
    assert stamps.text(WHEN) == b"2026-11-22 07:35:45.123456"
    assert stamps.text(WHEN + 1) == b"2026-11-22 07:35:46.123456"
    assert stamps.text(WHEN - 86400) == b"2026-11-21 07:35:45.123456"
    assert stamps.text(1795332945.0) == b"2026-11-22 07:35:45.000000"


@given(
    st.sampled_from(["event", "dash", "json"]),
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=8),
)
def test_messages_of_a_read_equal_one_record_each(fmt: str, lines: list[bytes]) -> None:
    """The batched path (all lines of one read) writes exactly the per-event records."""
    fields = {"event": "message", "time": WHEN, "ip": "10.0.0.1", "port": 4000, "conn": 3, "seq": 7}
    batched = make_formatter(fmt, utc=True).messages(fields, lines)
    single = make_formatter(fmt, utc=True)
    one_by_one = b"".join(
        single({**fields, "seq": seq, "msg": line}) for seq, line in enumerate(lines, 7)
    )
    assert batched == one_by_one
