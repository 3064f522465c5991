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
