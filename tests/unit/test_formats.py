"""The three formats by name: every record a formatter writes reads back to the same event."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog import log
from chatlog.log import RecordParser, make_formatter
from tests.unit.log_samples import CLIENT_EVENTS, FORMATS, PEER, SERVER_EVENTS, WHEN, T, expected

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


def test_format_names() -> None:
    """The formats ``--format`` offers, in the order it lists them."""
    assert list(log.FORMATS) == ["event", "dash", "json"]


def test_unknown_format_is_a_clear_error() -> None:
    """Asking for a format that does not exist names the ones that do."""
    with pytest.raises(ValueError, match="event, dash, json"):
        make_formatter("xml")
    with pytest.raises(ValueError, match="xml"):
        RecordParser("xml")


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


@pytest.mark.parametrize("fmt", ["event", "dash"])
def test_text_formats_name_the_node_in_server_started_only(fmt: str) -> None:
    """--node in a text format: Server Started ends with ", node NAME" and reads back with it;
    the other records stay as the seed wrote them."""
    formatter = make_formatter(fmt, utc=True, node="n1")
    start = {
        "event": "start",
        "time": 1763796945.123456,
        "listen": "127.0.0.1:5000",
        "endpoint": "tcp:5000",
        "pid": 42,
        "version": "0.1.0",
        "node": "n1",
    }
    record = formatter(start)
    assert record.endswith(b"pid 42, chatlog 0.1.0, node n1\n")
    assert RecordParser(fmt, utc=True).parse(record[:-1])["node"] == "n1"
    plain = make_formatter(fmt, utc=True)
    message = {
        "event": "message",
        "time": 1763796945.5,
        "ip": "127.0.0.1",
        "port": 5,
        "conn": 1,
        "seq": 1,
        "msg": b"hi",
    }
    assert formatter(message) == plain(message)
