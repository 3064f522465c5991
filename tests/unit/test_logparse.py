"""The log parsers: every record the formatters write reads back to the same event."""

from __future__ import annotations

import datetime
import gzip
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.log import LogReader, RecordParser, detect, make_formatter, parse_lines, sniff_format

FORMATS = ("event", "dash", "json")
T = 1795314336.685174  # 2026-11-22, with microseconds
PEER = {"ip": "127.0.0.1", "port": 53122, "conn": 17}

SERVER_EVENTS: list[dict[str, Any]] = [
    {
        "event": "start",
        "time": T,
        "listen": "127.0.0.1:5000",
        "endpoint": "tcp:5000",
        "pid": 4242,
        "version": "0.1.0",
    },
    {"event": "connect", "time": T, **PEER},
    {"event": "message", "time": T + 0.5, **PEER, "seq": 1, "msg": b"Hello, Server!"},
    {
        "event": "disconnect",
        "time": T + 1,
        **PEER,
        "how": "clean",
        "messages": 1,
        "seconds": 1.000001,
    },
    {"event": "line_too_long", "time": T + 2, **PEER, "limit": 65536},
    {"event": "timeout", "time": T + 3, **PEER, "kind": "idle", "seconds": 300},
    {"event": "timeout", "time": T + 3, **PEER, "kind": "line", "seconds": 2.5},
    {"event": "rejected", "time": T + 4, **PEER, "reason": "server busy", "limit": 10000},
    {
        "event": "rejected",
        "time": T + 4,
        **PEER,
        "reason": "too many connections from this address",
        "limit": 1000,
    },
    {
        "event": "log_error",
        "time": T + 5,
        "seconds": 2.25,
        "error": "[Errno 28] No space left on device",
        "refused": 3,
        "lost": 1,
    },
    {"event": "stop", "time": T + 6, "connections": 1, "messages": 1},
]

CLIENT_EVENTS: list[dict[str, Any]] = [
    {"event": "sent", "time": T, **PEER, "seq": 1, "msg": b"Hello (rtt 1.000 ms)"},
    {
        "event": "reply",
        "time": T + 0.001,
        **PEER,
        "seq": 1,
        "msg": b"Server received: Hello (rtt 1.000 ms)",
        "rtt_ms": 1.234,
    },
]

HOSTILE = [
    b"",
    b"back\\slash \\x41 \\u2028 \\\\",
    b"tab\there\rcr\x00nul\x7fdel\x1besc",
    "line\u2028para\u2029nel\x85 bidi\u202e".encode(),
    b"\xff\xfe\xc3 invalid utf-8 \xed\xa0\x80",
    b"[Connection] #1 connected",
    b"Message Received: 2026-11-22 14:35:45.123456 - 1.2.3.4:5 #6 - forged",
    b"- - - - 2026-11-22 14:35:45.123456 - [Server Stopped] 0 connections, 0 messages",
    b'{"ts": "x", "event": "stop"}',
    b"fake reply (rtt 9.999 ms)",
    "caf\u00e9 \U0001f600 \U000e0001".encode(),
]


def expected(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The fields a format carries: no seq in text formats, no conn for a dash message."""
    out = dict(event)
    if fmt != "json":
        out.pop("seq", None)
    if fmt == "dash" and event["event"] == "message":
        out.pop("conn", None)
    return out


def same(parsed: dict[str, Any], event: dict[str, Any]) -> None:
    assert parsed["time"] == pytest.approx(event["time"], abs=1e-6)
    assert {k: v for k, v in parsed.items() if k != "time"} == {
        k: v for k, v in event.items() if k != "time"
    }


def round_trip(events: list[dict[str, Any]], fmt: str, *, client: bool) -> list[dict[str, Any]]:
    formatter = make_formatter(fmt)
    parser = RecordParser(fmt, client=client)
    out = []
    for event in events:
        line = formatter(event)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        out.append(parser.parse(line[:-1]))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_server_events_round_trip(fmt: str) -> None:
    """Every server event, formatted then parsed, gives back its fields."""
    for parsed, event in zip(
        round_trip(SERVER_EVENTS, fmt, client=False), SERVER_EVENTS, strict=True
    ):
        same(parsed, expected(event, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_client_events_round_trip(fmt: str) -> None:
    """The client's sent and reply records read back, round trip included."""
    for parsed, event in zip(
        round_trip(CLIENT_EVENTS, fmt, client=True), CLIENT_EVENTS, strict=True
    ):
        same(parsed, expected(event, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("msg", HOSTILE)
def test_hostile_text_round_trips(fmt: str, msg: bytes) -> None:
    """Escaped, forged and non-UTF-8 text gives back the exact bytes and nothing else."""
    event = {"event": "message", "time": T, **PEER, "seq": 3, "msg": msg}
    [parsed] = round_trip([event], fmt, client=False)
    same(parsed, expected(event, fmt))


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    msg=st.one_of(
        st.binary(max_size=80),
        st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    ).map(lambda b: b.replace(b"\n", b"")),
    rtt=st.integers(min_value=0, max_value=10**9).map(lambda us: us / 1000),
    ip=st.sampled_from(["127.0.0.1", "::1", "fe80::1%eth0", "unix"]),
    when=st.floats(min_value=0, max_value=4e9),
)
def test_any_message_round_trips(fmt: str, msg: bytes, rtt: float, ip: str, when: float) -> None:
    """Any line a client can send reads back byte for byte, in every format, both roles."""
    fields = {"time": when, "ip": ip, "port": 1, "conn": 2, "seq": 3, "msg": msg}
    message = {"event": "message", **fields}
    [parsed] = round_trip([message], fmt, client=False)
    assert parsed["msg"] == msg
    assert parsed["ip"] == ip
    reply = {"event": "reply", **fields, "rtt_ms": rtt}
    [parsed] = round_trip([reply], fmt, client=True)
    assert parsed["msg"] == msg
    assert parsed["rtt_ms"] == pytest.approx(rtt, abs=0.0005)


@pytest.mark.parametrize("fmt", ("event", "dash"))
def test_text_timestamps_local_and_utc(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text formats are read as local time by default, as UTC with utc=True."""
    monkeypatch.setenv("TZ", "Asia/Bangkok")  # +07:00, no summer time
    time.tzset()
    try:
        event = {"event": "connect", "time": T, **PEER}
        local = make_formatter(fmt)(event)[:-1]
        utc = make_formatter(fmt, utc=True)(event)[:-1]
        assert local != utc
        assert RecordParser(fmt).parse(local)["time"] == pytest.approx(T, abs=1e-6)
        assert RecordParser(fmt, utc=True).parse(utc)["time"] == pytest.approx(T, abs=1e-6)
        assert RecordParser(fmt).parse(utc)["time"] == pytest.approx(T - 7 * 3600, abs=1e-6)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_json_offset_needs_no_hint() -> None:
    """A json timestamp carries its offset: the same instant whatever the hint."""
    line = b'{"ts": "2026-11-22T14:35:45.123456+07:00", "event": "stop", "connections": 0, "messages": 0}'
    want = datetime.datetime(2026, 11, 22, 7, 35, 45, 123456, tzinfo=datetime.UTC).timestamp()
    for utc in (False, True):
        assert RecordParser("json", utc=utc).parse(line)["time"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_detection_of_format_and_role(fmt: str) -> None:
    """Format and role are detected from the records themselves."""
    server = [make_formatter(fmt)(e) for e in SERVER_EVENTS]
    client = [make_formatter(fmt)(e) for e in CLIENT_EVENTS]
    assert detect([line[:-1] for line in server]) == (fmt, False)
    assert detect([line[:-1] for line in client]) == (fmt, True)
    assert sniff_format(server[1][:-1]) == fmt
    assert [e["event"] for e in parse_lines(client)] == ["sent", "reply"]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_counts_unparseable_lines(fmt: str, tmp_path: Path) -> None:
    """Garbage, a torn last line and a bad timestamp are counted with examples, not fatal."""
    formatter = make_formatter(fmt)
    good = [formatter(e) for e in SERVER_EVENTS]
    bad = [b"garbage\n", b"\xff\xfe\x00\n", good[2][:-1].replace(b"2026", b"20x6") + b"\n"]
    torn = good[3][: len(good[3]) // 2]  # a crash's last, unterminated record
    path = write(tmp_path / "mixed.log", [good[0], bad[0], *good[1:], bad[1], bad[2], torn])
    reader = LogReader(path)
    events = list(reader)
    assert reader.format == fmt
    assert [e["event"] for e in events] == [e["event"] for e in SERVER_EVENTS]
    assert reader.unparsed == 4
    assert reader.records == len(good) + 4
    assert [n for n, _ in reader.examples] == [2, len(good) + 2, len(good) + 3, len(good) + 4]


def test_reader_splits_on_newline_only(tmp_path: Path) -> None:
    """Raw U+2028 and \\x85 inside a record do not split it (str.splitlines would)."""
    # A hand-made event-format record with raw U+2028 / NEL, as a careless writer might leave.
    line = "Message Received: 2026-11-22 14:35:45.123456 - 127.0.0.1:1 #1 - a\u2028b\x85c\n"
    path = write(tmp_path / "raw.log", [line.encode()])
    [event] = list(LogReader(path))
    assert event["msg"] == "a\u2028b\x85c".encode()


def test_reader_reads_gzip_and_crlf(tmp_path: Path) -> None:
    """A rotated, compressed log is read; a CRLF conversion does not spoil records."""
    lines = [make_formatter("dash")(e).replace(b"\n", b"\r\n") for e in SERVER_EVENTS]
    path = tmp_path / "chatlog.log.2.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"".join(lines))
    reader = LogReader(path)
    assert len(list(reader)) == len(SERVER_EVENTS)
    assert reader.format == "dash" and reader.unparsed == 0


def test_unreadable_file_is_all_unparsed(tmp_path: Path) -> None:
    """A file that is no log at all yields nothing and counts every line."""
    path = write(tmp_path / "notes.txt", [b"hello\n", b"world\n"])
    reader = LogReader(path)
    assert list(reader) == []
    assert reader.format is None and reader.unparsed == 2


def test_event_format_ipv6_peer() -> None:
    """An IPv6 peer is bracketed in the event format and read back without brackets."""
    event = {"event": "message", "time": T, "ip": "::1", "port": 5, "conn": 1, "msg": b"x"}
    line = make_formatter("event")(event)
    assert b"[::1]:5" in line
    assert RecordParser("event").parse(line[:-1])["ip"] == "::1"
