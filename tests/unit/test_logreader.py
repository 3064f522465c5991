"""Reading log files: format and role detected, torn and unparseable lines counted, never fatal."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from chatlog.log import (
    TORN_MARK,
    LogReader,
    detect,
    format_at_end,
    is_torn,
    make_formatter,
    parse_lines,
    sniff_format,
)
from tests.unit.log_samples import CLIENT_EVENTS, FORMATS, SERVER_EVENTS


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
    """Garbage and a bad timestamp are counted with examples, a torn last line as torn; not fatal."""
    formatter = make_formatter(fmt)
    good = [formatter(e) for e in SERVER_EVENTS]
    bad = [b"garbage\n", b"\xff\xfe\x00\n", good[2][:-1].replace(b"2026", b"20x6") + b"\n"]
    torn = good[3][: len(good[3]) // 2]  # a crash's last, unterminated record
    path = write(tmp_path / "mixed.log", [good[0], bad[0], *good[1:], bad[1], bad[2], torn])
    reader = LogReader(path)
    events = list(reader)
    assert reader.format == fmt
    assert [e["event"] for e in events] == [e["event"] for e in SERVER_EVENTS]
    assert reader.unparsed == 3 and reader.torn == 1
    assert reader.records == len(good) + 4
    assert [n for n, _ in reader.examples] == [2, len(good) + 2, len(good) + 3]
    assert reader.torn_lines == [len(good) + 4]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cut", [0.5, 1.0], ids=["half", "all-but-newline"])
def test_a_marked_torn_line_is_no_record(fmt: str, cut: float, tmp_path: Path) -> None:
    """A line the writer marked torn is counted as torn, never read as the record it begins."""
    formatter = make_formatter(fmt)
    message = formatter(SERVER_EVENTS[2])
    # Cut where a text record still parses as a shorter message: a torn
    # record that "\n" alone would have mended into a message nobody sent.
    fragment = message[: int((len(message) - 1) * cut)]
    good = [formatter(e) for e in SERVER_EVENTS]
    path = write(tmp_path / "torn.log", [good[0], fragment + TORN_MARK + b"\n", *good[1:]])
    reader = LogReader(path)
    events = list(reader)
    assert [e["event"] for e in events] == [e["event"] for e in SERVER_EVENTS]
    assert (reader.torn, reader.torn_lines, reader.unparsed) == (1, [2], 0)
    assert reader.records == len(good) + 1
    assert [e["event"] for e in parse_lines(path.read_bytes().split(b"\n"))] == [
        e["event"] for e in SERVER_EVENTS
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_record_can_end_with_the_torn_mark(fmt: str) -> None:
    """Whatever a client sends, even the mark itself, its record does not end like a torn line."""
    formatter = make_formatter(fmt)
    for msg in (TORN_MARK, b"x" + TORN_MARK, TORN_MARK.replace(b"\t", b"\\t")):
        record = formatter({**SERVER_EVENTS[2], "msg": msg})
        assert not is_torn(record[:-1]), record


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


def test_format_at_end_reads_the_last_complete_records(tmp_path: Path) -> None:
    """The format of a file's last records: past a torn line, from the middle of a big
    file, and None for what is empty, missing or not a regular file (never blocking)."""
    json_record = make_formatter("json")(SERVER_EVENTS[0])
    event_record = make_formatter("event")(SERVER_EVENTS[0])
    log = tmp_path / "x.log"
    log.write_bytes(event_record * 5 + json_record * 5000 + b'{"ts": "torn')
    assert format_at_end(log) == "json"
    log.write_bytes(json_record * 5000 + event_record * 3)
    assert format_at_end(log) == "event"
    log.write_bytes(b"")
    assert format_at_end(log) is None
    assert format_at_end(tmp_path / "missing.log") is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert format_at_end(fifo) is None
