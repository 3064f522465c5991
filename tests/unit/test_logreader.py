"""Reading log files: format and role detected, torn and unparseable lines counted, never fatal."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from chatlog.log import LogReader, detect, make_formatter, parse_lines, sniff_format
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
