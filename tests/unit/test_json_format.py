"""The json format: JSON Lines, ASCII only, client text exact even when it is not UTF-8."""

from __future__ import annotations

import json

import pytest

from chatlog.log import RecordParser, make_formatter, unescape_text
from tests.unit.log_samples import message


def test_json_format_message() -> None:
    """JSON Lines with the documented keys, in order, and no record separator."""
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
    assert RecordParser("json").parse(record[:-1])["msg"] == b"ok \xff \\ \n"


def test_json_valid_utf8_keeps_the_text() -> None:
    """Valid UTF-8, controls included, is the exact text; JSON escapes the controls."""
    raw = 'tab\there \u2028 \x85 "quoted" caf\u00e9'.encode()
    record = make_formatter("json")(message(raw))
    assert record.isascii() and record.count(b"\n") == 1
    parsed = json.loads(record)
    assert parsed["msg"].encode() == raw and "utf8" not in parsed


@pytest.mark.parametrize(
    "line",
    [b"[1, 2]", b'{"ts": "2026-11-22T07:35:45.123456+00:00", "event": "bogus"}', b"{} {}"],
)
def test_json_that_is_no_record_is_refused(line: bytes) -> None:
    """Valid JSON that is not one object of a known event is not a record."""
    with pytest.raises(ValueError):
        RecordParser("json").parse(line)


def test_every_json_record_of_a_node_carries_its_name() -> None:
    """With --node, every record says "node" right after its event: one line, several lines
    (plain and escaped), and the other events; the parser gives it back."""
    formatter = make_formatter("json", utc=True, node="n1")
    first = message(b"plain")
    records = [
        formatter(first),
        formatter.messages(first, [b"a"]),
        formatter.messages(first, [b"one", b"two"]),
        formatter.messages(first, [b"tab\there", b"\xff"]),
        formatter(
            {
                "event": "start",
                "time": first["time"],
                "listen": "127.0.0.1:5000",
                "endpoint": "tcp:5000",
                "pid": 1,
                "version": "0",
                "node": "n1",
            }
        ),
        formatter({"event": "connect", **{k: first[k] for k in ("time", "ip", "port", "conn")}}),
    ]
    lines = b"".join(records).splitlines()
    assert len(lines) == 8
    parser = RecordParser("json")
    for line in lines:
        assert line.startswith(b'{"ts": "2026-11-22T07:35:45.123456+00:00", "event": "'), line
        assert line.count(b'"node"') == 1, line
        assert json.loads(line)["node"] == "n1"
        assert parser.parse(line)["node"] == "n1"
    assert b'"node"' not in make_formatter("json")(first)
